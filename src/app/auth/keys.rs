//! `--api-key-file`: the keys an application backend presents to the server API
//! (`Authorization: apikey KEY`), one a line.

use std::path::Path;

use subtle::ConstantTimeEq as _;

/// The shortest key accepted: a guessable key would open the whole API.
const MIN_KEY: usize = 16;

/// API keys.
#[derive(Clone)]
pub struct ApiKeys(Vec<Vec<u8>>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

impl ApiKeys {
    /// Parses one key a line; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<ApiKeys, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            if key.len() < MIN_KEY || key.contains(char::is_whitespace) {
                return Err(format!(
                    "line {}: a key is at least {MIN_KEY} characters without spaces",
                    n + 1
                ));
            }
            keys.push(key.as_bytes().to_vec());
        }
        if keys.is_empty() {
            return Err("no keys in the file".into());
        }
        Ok(ApiKeys(keys))
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<ApiKeys, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        ApiKeys::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether an `Authorization` value is `apikey KEY` with a known key. Each key is
    /// compared in constant time and every key is compared, so the time taken says nothing
    /// about how close a guess came.
    pub fn authorizes(&self, authorization: Option<&str>) -> bool {
        let Some((scheme, key)) = authorization.and_then(|v| v.trim().split_once(' ')) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("apikey") {
            return false;
        }
        let key = key.trim().as_bytes();
        self.0.iter().fold(false, |found, known| {
            found | bool::from(known.as_slice().ct_eq(key))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_authorize_only_with_the_apikey_scheme() {
        let keys = ApiKeys::parse("# backend\n0123456789abcdef\nsecond-key-xxxxxxxx\n").unwrap();
        assert!(keys.authorizes(Some("apikey 0123456789abcdef")));
        assert!(keys.authorizes(Some("ApiKey second-key-xxxxxxxx")));
        for refused in [
            None,
            Some(""),
            Some("apikey"),
            Some("apikey 0123456789abcde"),
            Some("apikey 0123456789abcdefg"),
            Some("Bearer 0123456789abcdef"),
        ] {
            assert!(!keys.authorizes(refused), "{refused:?}");
        }
        assert!(ApiKeys::parse("short\n").is_err());
        assert!(ApiKeys::parse("# none\n").is_err());
    }
}

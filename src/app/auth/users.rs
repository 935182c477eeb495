//! `--users-file`: the names that may log in on the built-in page and their password hashes,
//! one `name $argon2id$...` line each (a PHC string, as `argon2` tools print it).

use std::collections::HashMap;
use std::path::Path;

use argon2::{Argon2, PasswordHash, PasswordVerifier};

use super::valid_name;

/// Users and their password hashes.
#[derive(Clone, Debug)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// A hash checked for unknown names too, so that a refusal takes as long for a name that
    /// does not exist as for a wrong password (no list of names by timing).
    decoy: String,
}

impl Users {
    /// Parses `name hash` lines; blank lines and `#` comments are skipped. Every hash must be
    /// an argon2 PHC string.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |e: &str| format!("line {}: {e}", n + 1);
            let (name, hash) = match line.split_whitespace().collect::<Vec<_>>()[..] {
                [name, hash] => (name, hash),
                _ => return Err(at("expected `name argon2-hash`")),
            };
            valid_name(name).map_err(|e| at(&e))?;
            let parsed = PasswordHash::new(hash).map_err(|e| at(&format!("hash: {e}")))?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(at("the hash must be argon2 ($argon2id$...)"));
            }
            if hashes.insert(name.to_owned(), hash.to_owned()).is_some() {
                return Err(at("the name is already on a line above"));
            }
        }
        let decoy = hashes
            .values()
            .next()
            .cloned()
            .ok_or("no users in the file")?;
        Ok(Users { hashes, decoy })
    }

    /// Reads a users file.
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Users::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether `password` is `name`'s.
    pub fn check(&self, name: &str, password: &str) -> bool {
        let (hash, known) = match self.hashes.get(name) {
            Some(hash) => (hash, true),
            None => (&self.decoy, false),
        };
        let verified = Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok();
        verified && known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// argon2id of "secret" with small parameters (m=64 KiB, t=1), so the test is quick.
    pub(crate) const ANN_SECRET: &str =
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$Sm3MnLdCFk0Af+croKgebRoqqmhbKd88iiW3yUOXn78";

    #[test]
    fn passwords_are_checked_against_the_hashes() {
        let users = Users::parse(&format!("# who\nann {ANN_SECRET}\n")).unwrap();
        assert!(users.check("ann", "secret"));
        assert!(!users.check("ann", "Secret"));
        assert!(!users.check("bob", "secret"), "unknown name, same password");
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        for (text, error) in [
            ("ann\n", "line 1: expected `name argon2-hash`"),
            ("ann x y\n", "line 1: expected `name argon2-hash`"),
            ("# none\n", "no users in the file"),
        ] {
            assert_eq!(Users::parse(text).err().as_deref(), Some(error), "{text:?}");
        }
        assert!(Users::parse("ann notahash\n")
            .unwrap_err()
            .starts_with("line 1: hash"));
        let twice = format!("ann {ANN_SECRET}\nann {ANN_SECRET}\n");
        assert_eq!(
            Users::parse(&twice).err().as_deref(),
            Some("line 2: the name is already on a line above")
        );
    }
}

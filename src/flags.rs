//! The value parsers of the command line: every flag's nonsense values (zero, negative, nan,
//! a path without its slash, an origin with one) are refused at start; clap then prints the
//! message and exits with status 2.

#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use wsloop::duration::parse_duration;

/// A duration that must be more than zero (a zero timeout would close every connection at
/// once).
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(duration)
}

/// A duration that can be switched off with `off` (`None`); zero is refused, since it would
/// mean "at once, all the time" (a ping in a tight loop).
pub fn duration_or_off(text: &str) -> Result<Option<Duration>, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    positive_duration(text)
        .map(Some)
        .map_err(|e| format!("{e} (`off` turns it off)"))
}

/// A whole number of at least `MIN`.
pub fn at_least<const MIN: u64, T>(text: &str) -> Result<T, String>
where
    T: FromStr + TryInto<u64> + Copy,
{
    let value: T = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    match value.try_into() {
        Ok(n) if n >= MIN => Ok(value),
        _ => Err(format!("must be at least {MIN}")),
    }
}

/// A count of at least one (zero would refuse everything).
pub fn count<T>(text: &str) -> Result<T, String>
where
    T: FromStr + TryInto<u64> + Copy,
{
    at_least::<1, T>(text)
}

/// Events per second behind a token bucket whose burst is twice the rate: a finite number
/// of at least 0.5 (below it the bucket never holds one whole token, and everything is
/// refused, `/healthz` included).
pub fn rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !rate.is_finite() || rate < 0.5 {
        return Err("want a number of at least 0.5 (not nan or inf)".into());
    }
    Ok(rate)
}

/// A [`rate`] or `unlimited` (infinity: no limit).
pub fn rate_or_unlimited(text: &str) -> Result<f64, String> {
    if text.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(f64::INFINITY);
    }
    rate(text).map_err(|e| format!("{e}, or `unlimited`"))
}

/// A URL path for the WebSocket endpoint: it starts with `/` (a request target in origin
/// form does, RFC 9112 §3.2.1) and is compared with the request's path, so it has no query,
/// no fragment and no white space.
pub fn ws_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("must start with `/` (e.g. /{text})"));
    }
    if let Some(c) = text
        .chars()
        .find(|c| matches!(c, '?' | '#') || !c.is_ascii_graphic())
    {
        return Err(format!("{c:?} cannot be in the path"));
    }
    Ok(text.to_owned())
}

/// An origin as browsers send it in `Origin` (RFC 6454 §6.1): `scheme://host[:port]`, no
/// path, no trailing slash. `*` and `null` are refused with what to do instead.
pub fn origin(text: &str) -> Result<String, String> {
    match text {
        "*" => {
            return Err(
                "`*` is not an origin: leave --allow-origin out to allow every origin".into(),
            )
        }
        "null" => return Err(
            "`null` is the origin of sandboxed and file pages, which anyone can forge: not allowed"
                .into(),
        ),
        _ => {}
    }
    let Some((scheme, host)) = text.split_once("://") else {
        return Err(format!("want scheme://host[:port], e.g. https://{text}"));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || host.is_empty() {
        return Err(format!(
            "want scheme://host[:port], e.g. https://example.com, not {text:?}"
        ));
    }
    if host.contains(['/', '?', '#']) {
        let bare = &text[..scheme.len() + 3 + host.find(['/', '?', '#']).unwrap_or(host.len())];
        return Err(format!(
            "an origin has no path and no trailing slash (browsers send {bare:?})"
        ));
    }
    if host.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{text:?} has white space or non-ASCII characters (use the punycode form)"
        ));
    }
    Ok(text.to_owned())
}

/// A Redis URL the bridge can use: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, or
/// `rediss://...` for TLS (in a build with the `tls` feature).
pub fn redis_url(text: &str) -> Result<String, String> {
    let want = "want redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (rediss:// for TLS)";
    let rest = match (
        text.strip_prefix("redis://"),
        text.strip_prefix("rediss://"),
    ) {
        (Some(rest), _) => rest,
        (_, Some(_)) if !cfg!(feature = "tls") => {
            return Err("rediss://: this wsloop was built without the `tls` feature".into())
        }
        (_, Some(rest)) => rest,
        _ => return Err(want.into()),
    };
    if rest.contains('#') {
        // The redis crate reads `#insecure` (no certificate check) from the fragment.
        return Err(
            "no #fragment: the certificate is always checked (--redis-ca trusts a private CA)"
                .into(),
        );
    }
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err("the Redis URL has no host (e.g. redis://127.0.0.1:6379)".into());
    }
    Ok(text.to_owned())
}

/// The seed nodes of a Redis Cluster: Redis URLs ([`redis_url`]) separated by commas, without
/// a database other than 0 (a cluster has only that one).
pub fn redis_cluster_urls(text: &str) -> Result<String, String> {
    for url in text.split(',') {
        redis_url(url)?;
        let path = url.split_once("://").map_or("", |(_, rest)| rest);
        if let Some((_, db)) = path.split_once('/') {
            if !db.is_empty() && db != "0" {
                return Err(format!("{url}: a Redis Cluster has only database 0"));
            }
        }
    }
    Ok(text.to_owned())
}

/// A PEM file of CA certificates (`client --ca`, `serve --redis-ca`): readable and holding a
/// certificate, checked at start rather than at the first connection.
#[cfg(feature = "tls")]
pub fn ca_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    wsloop::client::tls::ca_file_roots(&path)?;
    Ok(path)
}

/// An extra request header of `wsloop client`: `Name: value` with a token for a name
/// (RFC 9110 §5.1, §5.6.2), no line breaks in the value, and not one of the header fields
/// the handshake writes itself.
pub fn header(text: &str) -> Result<String, String> {
    let Some((name, value)) = text.split_once(':') else {
        return Err(format!("{text:?} has no colon: want `Name: value`"));
    };
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(tchar) {
        return Err(format!("{name:?} is not a header name"));
    }
    if value.chars().any(|c| matches!(c, '\r' | '\n' | '\0')) {
        return Err("a header value cannot hold a line break or NUL".into());
    }
    const OWN: [&str; 5] = [
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
    ];
    if OWN.iter().any(|own| own.eq_ignore_ascii_case(name)) {
        return Err(format!("{name} is written by the handshake itself"));
    }
    Ok(format!("{name}: {}", value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_that_make_no_sense_are_refused() {
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("0").is_err());
        assert_eq!(positive_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration_or_off("off"), Ok(None));
        assert_eq!(duration_or_off("OFF"), Ok(None));
        assert_eq!(
            duration_or_off("0s"),
            Err("must be more than 0 (`off` turns it off)".into())
        );
        assert_eq!(duration_or_off("1m"), Ok(Some(Duration::from_secs(60))));
    }

    #[test]
    fn counts_and_rates() {
        assert_eq!(count::<usize>("3"), Ok(3));
        assert_eq!(count::<usize>("0"), Err("must be at least 1".into()));
        assert!(count::<u32>("-1").is_err());
        assert_eq!(
            at_least::<256, usize>("255"),
            Err("must be at least 256".into())
        );
        assert_eq!(rate("2.5"), Ok(2.5));
        for bad in ["nan", "inf", "-1", "0", "0.2", "x", ""] {
            assert!(rate(bad).is_err(), "{bad}");
        }
        assert_eq!(rate_or_unlimited("unlimited"), Ok(f64::INFINITY));
        assert!(rate_or_unlimited("inf").is_err());
    }

    #[test]
    fn paths_origins_urls_headers() {
        assert_eq!(ws_path("/ws"), Ok("/ws".into()));
        assert_eq!(ws_path("ws"), Err("must start with `/` (e.g. /ws)".into()));
        assert!(ws_path("/ws?x").is_err());
        assert!(ws_path("/w s").is_err());
        assert_eq!(
            origin("https://example.com"),
            Ok("https://example.com".into())
        );
        assert_eq!(
            origin("http://127.0.0.1:8080"),
            Ok("http://127.0.0.1:8080".into())
        );
        assert_eq!(
            origin("https://example.com/"),
            Err(r#"an origin has no path and no trailing slash (browsers send "https://example.com")"#.into())
        );
        for bad in ["*", "null", "example.com", "https://", "1x://a"] {
            assert!(origin(bad).is_err(), "{bad}");
        }
        assert!(redis_url("redis://:secret@127.0.0.1:6379/2").is_ok());
        assert!(redis_url("127.0.0.1:6379").is_err());
        assert!(redis_cluster_urls("redis://127.0.0.1:7000,redis://:pw@127.0.0.1:7001/0").is_ok());
        assert!(redis_cluster_urls("redis://127.0.0.1:7000/1").is_err());
        assert!(redis_cluster_urls("redis://127.0.0.1:7000,").is_err());
        assert!(redis_url("redis://:secret@/0").is_err());
        assert!(redis_url("rediss://127.0.0.1:6380/0#insecure").is_err());
        assert!(redis_url("redis://127.0.0.1:6379#insecure").is_err());
        assert_eq!(
            redis_url("rediss://:secret@127.0.0.1:6380/0").is_ok(),
            cfg!(feature = "tls")
        );
        assert_eq!(header("X-A:  b "), Ok("X-A: b".into()));
        assert_eq!(
            header("Authorization Bearer x"),
            Err(r#""Authorization Bearer x" has no colon: want `Name: value`"#.into())
        );
        assert!(header(": x").is_err());
        assert!(header("Bad Name: x").is_err());
        assert!(header("Sec-WebSocket-Key: x").is_err());
    }
}

//! Credentials beyond the token file (feature `auth`): signed tokens from the user's backend
//! ([`jwt`]), the built-in page's login and session cookie ([`session`], [`users`]), and the
//! server API's keys ([`keys`]).

pub mod checks;
pub mod jwt;
pub mod keys;
pub mod session;
pub mod users;

/// The longest user name a login takes.
pub const MAX_NAME: usize = 32;

/// Checks a name chosen at login or listed in a users file: 1 to [`MAX_NAME`] bytes, no
/// control characters, no spaces at either end (names are shown to everyone).
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a name is 1 to {MAX_NAME} bytes long"));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err("a name has no control characters and no spaces at either end".into());
    }
    Ok(())
}

//! The per-start part of connection ids and history epochs.

use std::time::{SystemTime, UNIX_EPOCH};

/// Six base-36 digits, random per start (the standard library's randomly seeded hasher, mixed
/// with the time): two starts share a tag with a chance of one in two billion.
pub(super) fn incarnation() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut n = hasher.finish() % 36u64.pow(6);
    let mut tag = [b'0'; 6];
    for digit in tag.iter_mut().rev() {
        *digit = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8_lossy(&tag).into_owned()
}

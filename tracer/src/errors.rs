//! How errors read. An error's message names what failed and, after a colon, why; the
//! "why" is kept as text, never also as a `source`, so that a chain printer (anyhow's
//! `{:#}`) does not say it twice. Errors from libraries that keep their own cause as a
//! source (aya's syscall errors keep the errno there) are flattened with [`chain`].

/// `e` and every source under it, joined by ": ".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        // Some libraries repeat their source in their own message.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn every_cause_once() {
        let io = || std::io::Error::from_raw_os_error(13);
        assert_eq!(chain(&Outer(io())), "outer: Permission denied (os error 13)");
        assert_eq!(chain(&Repeats(io())), "outer: Permission denied (os error 13)");
    }
}

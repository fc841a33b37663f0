//! `--header 'Name: value'` arguments.

use http::header::{HeaderName, HeaderValue, InvalidHeaderName, InvalidHeaderValue};

/// One request header given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// Header name (case-insensitive; stored lowercase by `http`).
    pub(crate) name: HeaderName,
    /// Header value; may be empty (an empty `User-Agent` or `Accept` suppresses the
    /// default, as in the kubelet).
    pub(crate) value: HeaderValue,
}

/// Why a `--header` argument was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    /// No colon separating name and value. What was typed is not repeated: a mistyped
    /// `Authorization` header holds a secret, and exec hook output ends up in events.
    #[error(
        "a header is 'Name: value', but one has no colon ({chars} characters, not shown: it may hold a secret)"
    )]
    MissingColon {
        /// How long the argument was.
        chars: usize,
    },
    /// The name is empty or has characters a header name cannot have. Not shown either: an
    /// invalid name is usually a value typed without its name.
    #[error(
        "a header name is not valid ({chars} characters, not shown: it may hold a secret): {source}"
    )]
    Name {
        /// How long the name was.
        chars: usize,
        /// Why `http` refused it.
        source: InvalidHeaderName,
    },
    /// The value has control characters. The (valid) name is shown, the value is not.
    #[error("invalid value for header {name:?}: {source}")]
    Value {
        /// The header's name.
        name: String,
        /// Why `http` refused it.
        source: InvalidHeaderValue,
    },
}

/// Parses `Name: value`, splitting at the first colon and trimming blanks around both.
pub(crate) fn parse(input: &str) -> Result<Header, HeaderError> {
    let (name, value) = input
        .split_once(':')
        .ok_or_else(|| HeaderError::MissingColon {
            chars: input.chars().count(),
        })?;
    let name = name.trim();
    let header_name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|source| HeaderError::Name {
            chars: name.chars().count(),
            source,
        })?;
    let value = HeaderValue::from_str(value.trim()).map_err(|source| HeaderError::Value {
        name: name.to_owned(),
        source,
    })?;
    Ok(Header {
        name: header_name,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_first_colon_and_trims() {
        let header = parse("X-Thing :  a:b ").ok();
        assert_eq!(header.as_ref().map(|h| h.name.as_str()), Some("x-thing"));
        assert_eq!(
            header.as_ref().map(|h| h.value.as_bytes()),
            Some(&b"a:b"[..])
        );
    }

    #[test]
    fn empty_value_is_allowed() {
        assert_eq!(
            parse("User-Agent:").ok().map(|h| h.value.is_empty()),
            Some(true)
        );
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            parse("novalue"),
            Err(HeaderError::MissingColon { .. })
        ));
        assert!(matches!(parse(": v"), Err(HeaderError::Name { .. })));
        assert!(matches!(parse("a b: v"), Err(HeaderError::Name { .. })));
        assert!(matches!(parse("a: v\u{1}"), Err(HeaderError::Value { .. })));
    }
}

//! The admin endpoints' settings from the environment: `LAMEDUCK_ADMIN_ADDR` and
//! `LAMEDUCK_SHUTDOWN_TOKEN` (docs/configuration.md). They are read here, on the HTTP side,
//! rather than by the core lifecycle, which knows nothing of HTTP.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};

use super::server::AdminError;

/// `LAMEDUCK_ADMIN_ADDR`: where the admin listener binds (`IP:PORT`).
pub const ENV_ADMIN_ADDR: &str = "LAMEDUCK_ADMIN_ADDR";
/// `LAMEDUCK_SHUTDOWN_TOKEN`: when set, `/shutdown` requires it in the
/// [`TOKEN_HEADER`](super::TOKEN_HEADER) header.
pub const ENV_SHUTDOWN_TOKEN: &str = "LAMEDUCK_SHUTDOWN_TOKEN";
/// The admin listener's address when `LAMEDUCK_ADMIN_ADDR` is not set: `0.0.0.0:9090`.
pub const DEFAULT_ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9090);

/// What the environment says about the admin endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminEnv {
    pub(crate) addr: SocketAddr,
    pub(crate) shutdown_token: Option<String>,
}

impl AdminEnv {
    pub(crate) fn from_env() -> Result<Self, AdminError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, AdminError> {
        let addr = match read(&lookup, ENV_ADMIN_ADDR)? {
            None => DEFAULT_ADMIN_ADDR,
            Some(value) => value
                .trim()
                .parse()
                .map_err(|source| AdminError::InvalidAddr {
                    var: ENV_ADMIN_ADDR,
                    value,
                    source,
                })?,
        };
        let shutdown_token = match read(&lookup, ENV_SHUTDOWN_TOKEN)? {
            None => None,
            Some(token) if is_valid_token(&token) => Some(token),
            Some(_) => {
                return Err(AdminError::InvalidToken {
                    var: ENV_SHUTDOWN_TOKEN,
                });
            }
        };
        Ok(Self {
            addr,
            shutdown_token,
        })
    }
}

/// A value set, as text; unset is `None`, and set but blank is an error.
fn read(
    lookup: &impl Fn(&str) -> Option<OsString>,
    var: &'static str,
) -> Result<Option<String>, AdminError> {
    let Some(raw) = lookup(var) else {
        return Ok(None);
    };
    let value = raw.into_string().map_err(|raw| AdminError::NotUnicode {
        var,
        value: if var == ENV_SHUTDOWN_TOKEN {
            // A secret is never echoed, not even mangled.
            String::from("<the token>")
        } else {
            raw.to_string_lossy().into_owned()
        },
    })?;
    if value.trim().is_empty() {
        return Err(AdminError::Empty { var });
    }
    Ok(Some(value))
}

/// The token travels in an HTTP header: non-empty visible ASCII.
pub(crate) fn is_valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lookup(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs = pairs.to_vec();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn defaults_when_unset() {
        let env = AdminEnv::from_lookup(lookup(&[])).unwrap();
        assert_eq!(env.addr, DEFAULT_ADMIN_ADDR);
        assert_eq!(env.addr.to_string(), "0.0.0.0:9090");
        assert_eq!(env.shutdown_token, None);
    }

    #[test]
    fn reads_both_variables() {
        let env = AdminEnv::from_lookup(lookup(&[
            (ENV_ADMIN_ADDR, " 127.0.0.1:9999 "),
            (ENV_SHUTDOWN_TOKEN, "s3cret"),
        ]))
        .unwrap();
        assert_eq!(env.addr, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(env.shutdown_token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn a_bad_address_is_named_and_quoted() {
        let err = AdminEnv::from_lookup(lookup(&[(ENV_ADMIN_ADDR, "localhost")])).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, AdminError::InvalidAddr { .. }), "{message}");
        assert!(
            message.contains("LAMEDUCK_ADMIN_ADDR=\"localhost\""),
            "{message}"
        );
    }

    #[test]
    fn a_bad_token_is_named_but_never_echoed() {
        for bad in ["has space", "tab\there", "naïve"] {
            let err = AdminEnv::from_lookup(lookup(&[(ENV_SHUTDOWN_TOKEN, bad)])).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, AdminError::InvalidToken { .. }), "{message}");
            assert!(message.contains(ENV_SHUTDOWN_TOKEN), "{message}");
            assert!(!message.contains(bad), "{message} must not echo the token");
            // `main` returning the error prints its Debug form: the same message.
            assert_eq!(format!("{err:?}"), message);
        }
    }

    #[test]
    fn blank_values_are_errors_naming_the_variable() {
        for var in [ENV_ADMIN_ADDR, ENV_SHUTDOWN_TOKEN] {
            let err = AdminEnv::from_lookup(lookup(&[(var, "  ")])).unwrap_err();
            assert!(matches!(err, AdminError::Empty { var: v } if v == var));
            assert!(err.to_string().contains(var));
        }
    }
}

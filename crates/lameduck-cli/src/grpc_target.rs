//! `grpc://HOST:PORT[/SERVICE]` URLs for `lameduck probe`.
//!
//! Stricter than `http://` URLs ([`crate::target`]): there is no default port for gRPC, so
//! a port is required; the path is the service name given to `grpc.health.v1.Health/Check`,
//! taken as written (not percent-decoded: service names are dotted identifiers such as
//! `helloworld.Greeter`). Every refusal is a usage error, and messages never show what may be
//! credentials (see [`redact`]).

use std::fmt;

use http::uri::Authority;

use crate::target::{AuthorityParts, check_port, redact};

/// Why a `grpc://` URL was refused. Every variant shows the URL with any userinfo hidden.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GrpcUrlError {
    /// `grpcs://`: TLS would need a C crypto library or a large dependency tree.
    #[error(
        "bad URL {0:?}: grpcs:// (TLS) is not supported: there is no TLS in this binary; probe a plaintext gRPC port with grpc://HOST:PORT[/SERVICE]"
    )]
    Tls(String),
    /// `grpc:host:port`, without `//`.
    #[error("bad URL {0:?}: expected grpc://HOST:PORT[/SERVICE]")]
    Syntax(String),
    /// `grpc://user:pw@host:port`: credentials would end up in process listings and events.
    #[error(
        "bad URL {0:?}: credentials in the URL are not supported; use --header 'Authorization: ...'"
    )]
    UserInfo(String),
    /// `grpc://:50051`.
    #[error("bad URL {0:?}: no host")]
    NoHost(String),
    /// `grpc://host`: gRPC has no default port to fall back to.
    #[error("bad URL {0:?}: no port; gRPC has no default port: grpc://HOST:PORT[/SERVICE]")]
    NoPort(String),
    /// `grpc://host:99999`, `grpc://host:abc`.
    #[error("bad URL {shown:?}: port {port:?} is not a number from 1 to 65535")]
    Port {
        /// What was given.
        shown: String,
        /// The port as written.
        port: String,
    },
    /// A host that `http` does not accept in an authority (`:authority` is sent as written).
    #[error("bad URL {0:?}: the host is not a valid host name or IP address")]
    Host(String),
    /// `?query` or `#fragment`: they have no meaning for a health check and would otherwise
    /// end up in the service name.
    #[error("bad URL {0:?}: a grpc:// URL has no query or fragment; the path is the service name")]
    QueryOrFragment(String),
    /// A service name with blanks or control characters: a mistyped argument, surely.
    #[error("bad URL {0:?}: the service name has blanks or control characters")]
    Service(String),
}

/// Whether `input` is meant as a gRPC URL (`grpc:` or `grpcs:`, any case), so that it is
/// parsed here and refused as a usage error rather than as a bad `http://` URL.
pub(crate) fn is_grpc(input: &str) -> bool {
    input.split_once(':').is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("grpc") || scheme.eq_ignore_ascii_case("grpcs")
    })
}

/// A parsed `grpc://HOST:PORT[/SERVICE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrpcTarget {
    /// Host name or IP literal, without IPv6 brackets, as written.
    host: String,
    /// TCP port.
    port: u16,
    /// `host:port` as written: the `:authority` sent.
    authority: Authority,
    /// The service to check; empty for the whole server.
    service: String,
}

impl GrpcTarget {
    /// Parses `grpc://HOST:PORT[/SERVICE]`. Refused: `grpcs://`, a missing or bad port, a
    /// missing host, credentials (any `@`, as for `http://` URLs: a password with a `/`
    /// would otherwise move into the service name and be printed), a query or fragment, and
    /// a service name with blanks or control characters.
    pub(crate) fn parse(input: &str) -> Result<Self, GrpcUrlError> {
        let shown = redact(input);
        let Some((scheme, rest)) = input.split_once(':') else {
            return Err(GrpcUrlError::Syntax(shown));
        };
        if scheme.eq_ignore_ascii_case("grpcs") {
            return Err(GrpcUrlError::Tls(shown));
        }
        if !scheme.eq_ignore_ascii_case("grpc") {
            return Err(GrpcUrlError::Syntax(shown));
        }
        let Some(rest) = rest.strip_prefix("//") else {
            return Err(GrpcUrlError::Syntax(shown));
        };
        if rest.contains('@') {
            return Err(GrpcUrlError::UserInfo(shown));
        }
        if rest.contains(['?', '#']) {
            return Err(GrpcUrlError::QueryOrFragment(shown));
        }
        let (authority, service) = rest.split_once('/').unwrap_or((rest, ""));
        let parts = AuthorityParts::split(authority);
        let host = parts.bare_host();
        if host.is_empty() {
            return Err(GrpcUrlError::NoHost(shown));
        }
        let port = match check_port(parts.port) {
            Ok(Some(port)) => port,
            Ok(None) => return Err(GrpcUrlError::NoPort(shown)),
            Err(()) => {
                return Err(GrpcUrlError::Port {
                    shown,
                    port: parts.port.unwrap_or_default().to_owned(),
                });
            }
        };
        let authority: Authority = authority
            .parse()
            .map_err(|_| GrpcUrlError::Host(shown.clone()))?;
        if service.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(GrpcUrlError::Service(shown));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            authority,
            service: service.to_owned(),
        })
    }

    /// Host name or IP literal (no brackets), to connect to.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// TCP port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` as written.
    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The service name to check; empty for the whole server.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }
}

impl fmt::Display for GrpcTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grpc://{}", self.authority)?;
        if !self.service.is_empty() {
            write!(f, "/{}", self.service)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(input: &str) -> GrpcTarget {
        GrpcTarget::parse(input).unwrap_or_else(|err| panic!("{input}: {err}"))
    }

    #[test]
    fn parses_host_port_and_service() {
        let t = target("grpc://127.0.0.1:50051");
        assert_eq!((t.host(), t.port(), t.service()), ("127.0.0.1", 50051, ""));
        assert_eq!(t.to_string(), "grpc://127.0.0.1:50051");

        let t = target("grpc://127.0.0.1:50051/");
        assert_eq!(t.service(), "");

        let t = target("GRPC://Example.com:0443/helloworld.Greeter");
        assert_eq!(
            (t.host(), t.port(), t.service()),
            ("Example.com", 443, "helloworld.Greeter")
        );
        assert_eq!(t.authority().as_str(), "Example.com:0443");
        assert_eq!(t.to_string(), "grpc://Example.com:0443/helloworld.Greeter");

        let t = target("grpc://[::1]:9/grpc.health.v1.Health");
        assert_eq!((t.host(), t.port()), ("::1", 9));
        assert_eq!(t.authority().as_str(), "[::1]:9");
    }

    #[test]
    fn refuses_what_it_cannot_probe() {
        let refused = |input: &str| GrpcTarget::parse(input).err();
        assert!(matches!(
            refused("grpcs://h:443"),
            Some(GrpcUrlError::Tls(_))
        ));
        assert!(matches!(refused("grpc://h"), Some(GrpcUrlError::NoPort(_))));
        assert!(matches!(
            refused("grpc://h:"),
            Some(GrpcUrlError::NoPort(_))
        ));
        assert!(matches!(
            refused("grpc://h/svc"),
            Some(GrpcUrlError::NoPort(_))
        ));
        assert!(matches!(
            refused("grpc://:1"),
            Some(GrpcUrlError::NoHost(_))
        ));
        assert!(matches!(
            refused("grpc:///x"),
            Some(GrpcUrlError::NoHost(_))
        ));
        assert!(matches!(refused("grpc:h:1"), Some(GrpcUrlError::Syntax(_))));
        for port in ["0", "65536", "99999", "abc", "-1", "1.5"] {
            let input = format!("grpc://h:{port}/s");
            match refused(&input) {
                Some(GrpcUrlError::Port { port: shown, .. }) => assert_eq!(shown, port),
                other => panic!("{input}: {other:?}"),
            }
        }
        assert!(matches!(
            refused("grpc://h:1/s?x=1"),
            Some(GrpcUrlError::QueryOrFragment(_))
        ));
        assert!(matches!(
            refused("grpc://h:1/s#f"),
            Some(GrpcUrlError::QueryOrFragment(_))
        ));
        assert!(matches!(
            refused("grpc://h:1/a b"),
            Some(GrpcUrlError::Service(_))
        ));
        assert!(matches!(
            refused("grpc://h h:1/"),
            Some(GrpcUrlError::Host(_))
        ));
    }

    #[test]
    fn credentials_are_refused_and_never_shown() {
        for input in [
            "grpc://user:s3cret@h:1/svc",
            "grpc://user:pa/s3cret@h:1",
            "grpcs://user:s3cret@h:1",
        ] {
            let message = GrpcTarget::parse(input)
                .err()
                .map(|err| err.to_string())
                .unwrap_or_default();
            assert!(!message.is_empty(), "{input} was accepted");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[test]
    fn grpc_schemes_are_recognised() {
        assert!(is_grpc("grpc://h:1"));
        assert!(is_grpc("GRPCS://h:1"));
        assert!(is_grpc("grpc:h"));
        assert!(!is_grpc("http://h/"));
        assert!(!is_grpc("grpcx://h:1"));
        assert!(!is_grpc("127.0.0.1:50051"));
    }
}

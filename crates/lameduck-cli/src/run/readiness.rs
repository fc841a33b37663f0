//! `--ready URL`: whether the child serves yet, asked the way the kubelet asks.

use std::fmt;
use std::time::Duration;

use crate::http_get::{self, GetRequest};
use crate::target::Target;

/// The kubelet's probe timeout default.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the child's readiness is read.
#[derive(Debug, Clone)]
pub(crate) enum ReadyProbe {
    /// `http://HOST:PORT/PATH`: ready when the GET answers 200–399 within the timeout
    /// (redirects followed by the kubelet's rules).
    Http(Target),
    /// `tcp://HOST:PORT`: ready when a connection is accepted within the timeout.
    Tcp { host: String, port: u16 },
}

impl fmt::Display for ReadyProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(target) => write!(f, "{target}"),
            Self::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

impl ReadyProbe {
    /// `http://…` (as `lameduck probe` takes it) or `tcp://HOST:PORT`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("tcp://") {
            // Never echoed as given: it could carry credentials (`tcp://user:secret@h:1`).
            let shown = crate::target::redact(text);
            if rest.contains('@') {
                return Err(format!(
                    "{shown:?}: a tcp:// address takes no credentials (tcp://HOST:PORT)"
                ));
            }
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
                format!("{shown:?}: a tcp:// address needs a port (tcp://HOST:PORT)")
            })?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains('/') {
                return Err(format!("{shown:?} is not tcp://HOST:PORT"));
            }
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("{shown:?}: the port must be a number from 1 to 65535"))?;
            return Ok(Self::Tcp {
                host: host.to_owned(),
                port,
            });
        }
        if !text.starts_with("http://") {
            return Err(format!(
                "--ready takes http://HOST:PORT/PATH or tcp://HOST:PORT, not {}",
                crate::target::redact(text)
            ));
        }
        Target::parse(text)
            .map(Self::Http)
            .map_err(|err| err.to_string())
    }

    /// One probe: `Ok` when ready, else why not.
    pub(crate) async fn check(&self) -> Result<(), String> {
        match self {
            Self::Http(target) => {
                let request = GetRequest {
                    url: target.clone(),
                    headers: Vec::new(),
                    default_user_agent: format!("lameduck-run/{}", env!("CARGO_PKG_VERSION")),
                    timeout: PROBE_TIMEOUT,
                };
                let response = http_get::get(&request).await.map_err(|e| e.to_string())?;
                let status = response.status.as_u16();
                if (200..400).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("{} answered {status}", response.url))
                }
            }
            Self::Tcp { host, port } => {
                let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
                match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
                    Ok(Ok(_stream)) => Ok(()),
                    Ok(Err(error)) => Err(format!("{self}: {error}")),
                    Err(_) => Err(format!("{self}: no connection within {PROBE_TIMEOUT:?}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert!(matches!(
            ReadyProbe::parse("http://127.0.0.1:8080/healthz").unwrap(),
            ReadyProbe::Http(_)
        ));
        match ReadyProbe::parse("tcp://127.0.0.1:5432").unwrap() {
            ReadyProbe::Tcp { host, port } => {
                assert_eq!((host.as_str(), port), ("127.0.0.1", 5432))
            }
            other => panic!("{other:?}"),
        }
        match ReadyProbe::parse("tcp://[::1]:80").unwrap() {
            ReadyProbe::Tcp { host, port } => assert_eq!((host.as_str(), port), ("::1", 80)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_other_forms_naming_them() {
        for bad in [
            "ftp://x/",
            "tcp://host",
            "tcp://:80",
            "tcp://h:0",
            "tcp://h:99999",
            "https://x/",
            "localhost:80",
        ] {
            assert!(ReadyProbe::parse(bad).is_err(), "{bad}");
        }
        for with_credentials in [
            "ftp://user:secret@x/",
            "tcp://user:secret@h",
            "tcp://user:secret@h:80",
            "tcp://user:secret@h:99999",
        ] {
            let err = ReadyProbe::parse(with_credentials).unwrap_err();
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[tokio::test]
    async fn tcp_readiness_follows_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = ReadyProbe::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
        assert_eq!(probe.check().await, Ok(()));
        drop(listener);
        assert!(probe.check().await.is_err());
    }
}

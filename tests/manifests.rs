//! The Kubernetes manifests and Dockerfile of the examples agree with what the SDK and the
//! services actually do: ports, probe paths, the preStop hook and the timing.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use serde_norway::Value;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn documents() -> Vec<Value> {
    documents_of("orders.yaml")
}

fn documents_of(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(examples().join("k8s").join(file)).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))?["value"]
        .as_str()
}

fn named_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no port named {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

/// The SDK's configuration from the container's environment, checked to plan with the
/// grace period the pod is given.
fn config_with_the_pods_grace_period(pod: &Value, container: &Value) -> lameduck::Config {
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let lookup = |name: &str| env_value(container, name).map(Into::into);
    let config = lameduck::Builder::from_lookup(lookup)
        .unwrap()
        .config()
        .unwrap();
    assert_eq!(config.grace_period(), Duration::from_secs(grace));
    config
}

/// The admin port is the SDK's default, and `LAMEDUCK_ADMIN_ADDR` says so.
fn assert_admin_on_the_default_address(container: &Value) {
    let admin_port = u64::from(lameduck_axum::DEFAULT_ADMIN_ADDR.port());
    assert_eq!(named_port(container, "admin"), admin_port);
    assert_eq!(
        env_value(container, "LAMEDUCK_ADMIN_ADDR"),
        Some(lameduck_axum::DEFAULT_ADMIN_ADDR.to_string().as_str())
    );
}

/// The three probes point at the admin endpoints' paths on the admin port.
fn assert_probes_on_the_admin_port(container: &Value) {
    for (probe, path) in [
        ("startupProbe", "/startupz"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(get["port"].as_str(), Some("admin"), "{probe}");
    }
}

/// Every `LAMEDUCK_*` variable set is one the core or the admin endpoints read.
fn assert_every_lameduck_variable_is_read(container: &Value) {
    for var in container["env"].as_sequence().unwrap() {
        let name = var["name"].as_str().unwrap();
        if name.starts_with("LAMEDUCK_") {
            assert!(
                lameduck::ENV_VARS.contains(&name)
                    || [
                        lameduck_axum::ENV_ADMIN_ADDR,
                        lameduck_axum::ENV_SHUTDOWN_TOKEN
                    ]
                    .contains(&name),
                "unknown variable {name}"
            );
        }
    }
}

#[test]
fn the_deployment_matches_the_service_and_the_sdk_defaults() {
    let docs = documents();
    let deployment = kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // Ports: traffic on the service's default PORT, admin on the SDK's default address.
    assert_eq!(named_port(container, "http"), 8080);
    assert_eq!(env_value(container, "PORT"), Some("8080"));
    assert_admin_on_the_default_address(container);

    // Probes point at the admin router's paths on the admin port.
    assert_probes_on_the_admin_port(container);

    // preStop calls /shutdown with the token the service is given.
    let prestop = &container["lifecycle"]["preStop"]["httpGet"];
    assert_eq!(prestop["path"].as_str(), Some("/shutdown"));
    assert_eq!(prestop["port"].as_str(), Some("admin"));
    let header = &prestop["httpHeaders"][0];
    let name = header["name"].as_str().unwrap();
    assert!(
        name.eq_ignore_ascii_case(lameduck_axum::TOKEN_HEADER),
        "{name}"
    );
    let secret = kind(&docs, "Secret");
    assert_eq!(
        header["value"].as_str(),
        secret["stringData"]["shutdown-token"].as_str()
    );
    let token_env = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("LAMEDUCK_SHUTDOWN_TOKEN"))
        .unwrap();
    assert_eq!(
        token_env["valueFrom"]["secretKeyRef"]["name"],
        secret["metadata"]["name"]
    );

    // Timing: the grace period the pod gets is the one the SDK plans with, and the
    // lame-duck delay plus the drain fit before its deadline.
    let config = config_with_the_pods_grace_period(pod, container);
    assert_eq!(config.grace_period(), lameduck::DEFAULT_GRACE_PERIOD);
    assert_eq!(config.drain_timeout(), lameduck::DEFAULT_DRAIN_TIMEOUT);
    assert_eq!(
        config.shutdown_delay(),
        lameduck::DEFAULT_KUBERNETES_SHUTDOWN_DELAY
    );
    assert!(config.shutdown_delay() + config.drain_timeout() < config.deadline());
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    // Every LAMEDUCK_* variable set is one the SDK reads.
    assert_every_lameduck_variable_is_read(container);
    assert_eq!(
        container["terminationMessagePolicy"].as_str(),
        Some("FallbackToLogsOnError")
    );
    assert_eq!(
        container["terminationMessagePath"].as_str(),
        Some(lameduck::DEFAULT_TERMINATION_LOG)
    );

    let service = kind(&docs, "Service");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some("http")
    );
}

#[test]
fn the_dockerfile_builds_the_binaries_it_copies_and_probes_with_the_helper() {
    let dockerfile = std::fs::read_to_string(examples().join("k8s/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("cargo build --release --locked -p orders -p greeter -p lameduck-cli")
    );
    assert!(dockerfile.contains("+crt-static"));
    assert!(dockerfile.contains("release/orders /orders"));
    assert!(dockerfile.contains("release/lameduck /lameduck"));
    assert!(dockerfile.contains("distroless/static"));
    // PID 1 is an init that reaps orphans and forwards signals; the service is its child.
    assert!(dockerfile.contains("/usr/bin/tini-static /tini"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/tini", "--", "/orders"]"#));
    // Exec health check via the helper, since the image has no shell or curl.
    assert!(dockerfile.contains(r#"["/lameduck", "probe", "http://127.0.0.1:9090/livez""#));
    // The gRPC example: its own target, probed through the health service on its port.
    assert!(dockerfile.contains("release/greeter /greeter"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/tini", "--", "/greeter"]"#));
    assert!(dockerfile.contains(&format!(
        r#"["/lameduck", "probe", "grpc://127.0.0.1:50051/{}""#,
        lameduck_tonic::LIVENESS_SERVICE
    )));
    let manifest = std::fs::read_to_string(examples().join("k8s/orders.yaml")).unwrap();
    assert!(manifest.contains(r#"command: ["/lameduck", "prestop""#));
}

fn nginx_documents() -> Vec<Value> {
    documents_of("nginx.yaml")
}

/// nginx under `lameduck run`: the init container installs the binary into the volume the
/// main container runs it from; the supervisor wraps nginx with its graceful stop signal
/// and a readiness URL on nginx's port; the probes and preStop go to the supervisor's
/// admin endpoints; the timing fits the grace period.
#[test]
fn the_nginx_deployment_runs_nginx_under_the_supervisor() {
    let docs = nginx_documents();
    let deployment = kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The binary: installed by the init container into the shared emptyDir.
    let init = &pod["initContainers"][0];
    let install = init["command"].as_sequence().unwrap();
    assert_eq!(install[0].as_str(), Some("/lameduck"));
    assert_eq!(install[1].as_str(), Some("install"));
    let installed_into = install[2].as_str().unwrap();
    let mount_of = |c: &Value, volume: &str| -> String {
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str() == Some(volume))
            .unwrap_or_else(|| panic!("{volume} not mounted"))["mountPath"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(mount_of(init, "lameduck"), installed_into);
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some("lameduck"))
        .expect("the lameduck volume");
    assert!(volume["emptyDir"].is_mapping(), "an emptyDir");

    // The command: the supervisor from that volume, wrapping nginx in the foreground.
    let command: Vec<&str> = container["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        command[0],
        format!("{}/lameduck", mount_of(container, "lameduck"))
    );
    assert_eq!(command[1], "run");
    let option = |name: &str| {
        command
            .iter()
            .position(|a| *a == name)
            .map(|i| command[i + 1])
    };
    assert_eq!(
        option("--stop-signal"),
        Some("SIGQUIT"),
        "nginx's graceful stop"
    );
    let http_port = named_port(container, "http");
    assert_eq!(
        option("--ready"),
        Some(format!("http://127.0.0.1:{http_port}/").as_str())
    );
    let separator = command.iter().position(|a| *a == "--").expect("--");
    assert_eq!(&command[separator + 1..], ["nginx", "-g", "daemon off;"]);

    // Probes and preStop: the supervisor's admin endpoints.
    assert_admin_on_the_default_address(container);
    assert_probes_on_the_admin_port(container);
    let prestop = &container["lifecycle"]["preStop"]["httpGet"];
    assert_eq!(prestop["path"].as_str(), Some("/shutdown"));
    assert_eq!(prestop["port"].as_str(), Some("admin"));

    // Timing: the grace period the pod gets is the one the supervisor plans with, and the
    // lame duck leaves nginx most of it to drain.
    let config = config_with_the_pods_grace_period(pod, container);
    assert!(config.shutdown_delay() < config.deadline());
    assert!(
        config.deadline() - config.shutdown_delay() >= Duration::from_secs(10),
        "nginx gets at least 10 s to drain"
    );
    assert_every_lameduck_variable_is_read(container);
    assert_eq!(
        container["terminationMessagePath"].as_str(),
        Some(lameduck::DEFAULT_TERMINATION_LOG)
    );
    let service = kind(&docs, "Service");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some("http")
    );

    // The init container's image is the Dockerfile's `lameduck` target.
    let dockerfile = std::fs::read_to_string(examples().join("k8s/Dockerfile")).unwrap();
    assert!(dockerfile.contains("AS lameduck"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/lameduck"]"#));
}

/// The greeter: native gRPC probes on the gRPC port, each asking the health service for
/// the name lameduck-tonic answers as that probe's kind; preStop on the admin port; the
/// timing fits the grace period.
#[test]
fn the_greeter_deployment_probes_the_health_service_it_serves() {
    let docs = documents_of("greeter.yaml");
    let deployment = kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // gRPC on PORT, the greeter's default; the admin endpoints on the SDK's default.
    let grpc_port = named_port(container, "grpc");
    assert_eq!(grpc_port, 50051, "the greeter's default port");
    assert_eq!(
        env_value(container, "PORT"),
        Some(grpc_port.to_string().as_str())
    );
    assert_admin_on_the_default_address(container);

    // A probe's gRPC port is a number, which must be the one served; the service name
    // picks the check (absent means "", the whole server: readiness).
    let grpc_probe = |probe: &str| -> Option<String> {
        let grpc = &container[probe]["grpc"];
        assert_eq!(grpc["port"].as_u64(), Some(grpc_port), "{probe} port");
        assert!(
            container[probe]["httpGet"].is_null(),
            "{probe} is a gRPC probe"
        );
        grpc["service"].as_str().map(str::to_owned)
    };
    let readiness = grpc_probe("readinessProbe").unwrap_or_default();
    assert!(
        readiness.is_empty() || readiness == lameduck_tonic::READINESS_SERVICE,
        "readiness asks for {readiness:?}"
    );
    assert_eq!(
        grpc_probe("livenessProbe").as_deref(),
        Some(lameduck_tonic::LIVENESS_SERVICE),
        "liveness must not fail while draining"
    );
    assert_eq!(
        grpc_probe("startupProbe").as_deref(),
        Some(lameduck_tonic::STARTUP_SERVICE)
    );
    // Readiness fails on the first probe after the trigger, well within the delay.
    let readiness_probe = &container["readinessProbe"];
    assert_eq!(readiness_probe["failureThreshold"].as_u64(), Some(1));
    let period = readiness_probe["periodSeconds"].as_u64().unwrap();

    // preStop calls /shutdown on the admin port with the token the service is given.
    let prestop = &container["lifecycle"]["preStop"]["httpGet"];
    assert_eq!(prestop["path"].as_str(), Some("/shutdown"));
    assert_eq!(prestop["port"].as_str(), Some("admin"));
    let secret = kind(&docs, "Secret");
    assert_eq!(
        prestop["httpHeaders"][0]["value"].as_str(),
        secret["stringData"]["shutdown-token"].as_str()
    );

    // Timing: the pod's grace period is the SDK's, the delay outlasts a readiness period
    // (endpoints drop the pod while it still serves), and delay plus drain fit the deadline.
    let config = config_with_the_pods_grace_period(pod, container);
    assert!(config.shutdown_delay() > Duration::from_secs(period));
    assert!(config.shutdown_delay() + config.drain_timeout() < config.deadline());
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert_every_lameduck_variable_is_read(container);

    let service = kind(&docs, "Service");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some("grpc")
    );
}

//! `lameduck run` around a naive program: Python's `http.server`, which dies the instant it
//! gets SIGTERM. Under load from keep-alive clients whose traffic goes on for the same
//! 300 ms after SIGTERM in both cases (the platform's routing catching up), the bare server
//! loses requests and the supervised one, with a 1 s lame duck, loses none.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lameduck_platform_tests::{
    Service, TempDir, binary, free_port, get, start_load, start_load_with,
};
use nix::sys::signal::Signal;

const CONNECTIONS: usize = 32;
/// Requests per second in all: steady, well within what `http.server` sustains.
const RATE: u64 = 300;
const PATIENCE: Duration = Duration::from_secs(30);
/// How long traffic keeps arriving after SIGTERM, in both cases: endpoints, kube-proxy and
/// load balancers catching up. Shorter than the supervised case's 1 s lame duck.
const PROPAGATION: Duration = Duration::from_millis(300);

/// A script that the harness starts as "the service" (with `PORT` set), which `exec`s
/// `command`: so the service's pid is the program's own.
fn launcher(dir: &Path, name: &str, command: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nexec {command}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn python_server() -> &'static str {
    // `-u`: the log reaches the harness as it is written.
    "python3 -u -m http.server \"$PORT\" --bind 127.0.0.1"
}

/// Until the traffic port answers 200.
fn wait_serving(service: &Service) {
    let deadline = Instant::now() + PATIENCE;
    while get(service.traffic, "/").map_or(true, |r| r.status != 200) {
        assert!(
            Instant::now() < deadline,
            "never served:\n{}",
            service.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failed(report: &lameduck_loadgen::LoadReport) -> u64 {
    report.counts.failures()
}

#[test]
fn a_naive_server_loses_no_request_under_lameduck_run() {
    let dir = TempDir::new("supervisor-python");
    let lameduck = binary("lameduck");
    let command = format!(
        "{} run --ready http://127.0.0.1:$PORT/ -- {}",
        lameduck.display(),
        python_server()
    );
    let script = launcher(dir.path(), "supervised.sh", &command);
    let mut service = Service::start(
        &script,
        dir.path(),
        "supervised",
        &[("LAMEDUCK_SHUTDOWN_DELAY", "1s".to_owned())],
    );
    service.wait_ready();
    let (load, stop) = start_load(&service, CONNECTIONS, RATE);
    // Some traffic first, so the stop happens under load.
    wait_serving(&service);
    std::thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    service.signal(Signal::SIGTERM);
    // The platform takes the pod out of its endpoints once readiness fails.
    let deadline = Instant::now() + PATIENCE;
    while get(service.admin, "/readyz").is_ok_and(|r| r.status == 200) {
        assert!(Instant::now() < deadline, "readiness never failed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let readiness_failed_after = signalled.elapsed();
    // Traffic keeps coming for the same reaction time as in the bare case (well within the
    // 1 s lame duck): the platform's routing catches up a moment after the signal.
    std::thread::sleep(PROPAGATION.saturating_sub(signalled.elapsed()));
    let _ = stop.send(());
    let report = load.join().unwrap();
    // http.server dies of its stop signal: 128 + SIGTERM.
    let status = service.wait_exit(PATIENCE);
    eprintln!(
        "supervised: {} requests, {} failed ({:?}), readiness failed {:?} after SIGTERM, exit {status}",
        report.counts.total(),
        failed(&report),
        report.counts,
        readiness_failed_after
    );
    assert!(report.counts.ok > 0, "{report:?}");
    assert_eq!(failed(&report), 0, "{report:?}\n{}", service.logs());
    assert_eq!(status, 143, "{}", service.logs());
    let termination = service.report();
    assert_eq!(termination["reason"], "signal:SIGTERM");
    assert_eq!(termination["child"]["signal"], "SIGTERM");
    assert_eq!(termination["child"]["killed"], false);
}

#[test]
fn the_same_server_without_the_supervisor_loses_requests() {
    let dir = TempDir::new("bare-python");
    let script = launcher(dir.path(), "bare.sh", python_server());
    let mut service = Service::start(&script, dir.path(), "bare", &[]);
    wait_serving(&service);
    let (load, stop) = start_load(&service, CONNECTIONS, RATE);
    std::thread::sleep(Duration::from_millis(300));

    service.signal(Signal::SIGTERM);
    // The platform's routing catches up a moment after the signal: the same reaction time
    // as in the supervised case.
    std::thread::sleep(PROPAGATION);
    let _ = stop.send(());
    let report = load.join().unwrap();
    let status = service.wait_exit(PATIENCE);
    eprintln!(
        "bare: {} requests, {} failed ({:?}), exit {status}",
        report.counts.total(),
        failed(&report),
        report.counts
    );
    assert!(
        failed(&report) > 0,
        "the bare server lost nothing? {report:?}"
    );
}

/// The path of `nginx`, installed from Debian's package when missing (as `bench/run`
/// does), so that the test needs nothing by hand.
fn nginx() -> PathBuf {
    let found = || {
        ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(path) = found() {
        return path;
    }
    // /proc/self belongs to the process's effective user.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let apt = |args: &[&str]| {
        let mut command = if root {
            std::process::Command::new("apt-get")
        } else {
            let mut sudo = std::process::Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        apt(&["update", "-qq"])
            && apt(&[
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "nginx-light"
            ]),
        "nginx is missing and could not be installed with apt-get (install nginx)"
    );
    found().expect("nginx after installing it")
}

/// An nginx configuration with everything in `dir`, in the foreground, listening on
/// 127.0.0.1:`port`, with `server` as the body of its one server block.
fn nginx_conf(dir: &Path, name: &str, port: u16, server: &str, upstream: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("nginx.conf");
    let p = d.display();
    std::fs::write(
        &path,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\n\
             error_log stderr warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  \
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  \
             uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  {upstream}\n  \
             server {{\n    listen 127.0.0.1:{port};\n    {server}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    path
}

/// A backend: nginx serving a small page, under `lameduck run --stop-signal SIGQUIT`.
fn supervised_nginx(dir: &Path, name: &str, port: u16) -> Service {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from nginx\n").unwrap();
    let conf = nginx_conf(
        dir,
        name,
        port,
        &format!("root {};\n    location / {{ }}", www.display()),
        "",
    );
    let command = format!(
        "{} run --stop-signal SIGQUIT --ready http://127.0.0.1:{port}/ -- {} -c {}",
        binary("lameduck").display(),
        nginx().display(),
        conf.display()
    );
    let script = launcher(dir, &format!("{name}.sh"), &command);
    let mut service = Service::start(
        &script,
        dir,
        name,
        &[("LAMEDUCK_SHUTDOWN_DELAY", "1s".to_owned())],
    );
    service.wait_ready();
    service
}

/// The front proxy's upstream block, with the backends on `ports`.
fn upstream(ports: &[u16]) -> String {
    let servers: String = ports
        .iter()
        .map(|p| format!("server 127.0.0.1:{p};"))
        .collect();
    format!("upstream backends {{ {servers} keepalive 16; }}")
}

fn proxy_server() -> &'static str {
    // No retry: as with a Kubernetes Service, whatever a backend does reaches the client.
    "location / { proxy_pass http://backends; proxy_http_version 1.1; \
     proxy_set_header Connection \"\"; proxy_next_upstream off; }"
}

/// Real nginx, restarted the way Kubernetes restarts a pod, behind a proxy that does not
/// retry: each backend in turn gets SIGTERM; after the endpoint propagation lag (300 ms,
/// within the 1 s lame duck) the proxy's upstream is rewritten without it and reloaded;
/// once the backend has exited, a new one starts on its port, and goes back into the
/// upstream once ready. Clients (new connection per request, so that the proxy's reloads
/// are not what is measured) see no failure.
#[test]
fn nginx_under_lameduck_run_restarts_under_load_without_a_failed_request() {
    let dir = TempDir::new("supervisor-nginx");
    let nginx = nginx();
    let ports = [free_port(), free_port()];
    let mut backends: Vec<Service> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| supervised_nginx(dir.path(), &format!("backend{i}-0"), port))
        .collect();

    let front_port = free_port();
    let front_conf = nginx_conf(
        dir.path(),
        "front",
        front_port,
        proxy_server(),
        &upstream(&ports),
    );
    let front_script = launcher(
        dir.path(),
        "front.sh",
        &format!("{} -c {}", nginx.display(), front_conf.display()),
    );
    let mut front = Service::start(&front_script, dir.path(), "front", &[]);
    front.traffic = std::net::SocketAddr::from(([127, 0, 0, 1], front_port));
    wait_serving(&front);
    let reload = |upstreams: &[u16]| {
        let conf = nginx_conf(
            dir.path(),
            "front",
            front_port,
            proxy_server(),
            &upstream(upstreams),
        );
        let status = std::process::Command::new(&nginx)
            .args(["-c", conf.to_str().unwrap(), "-s", "reload"])
            .status()
            .unwrap();
        assert!(status.success(), "nginx -s reload failed");
    };

    // A new connection per request, so that the proxy's reloads are not what is measured.
    let config = lameduck_loadgen::LoadConfig::new(&format!("http://127.0.0.1:{front_port}/"))
        .unwrap()
        .header("Connection: close")
        .unwrap();
    let (load, stop) = start_load_with(config, 16, RATE);
    std::thread::sleep(Duration::from_millis(300));

    for i in 0..ports.len() {
        let others: Vec<u16> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| *p)
            .collect();
        let mut old = backends.remove(i);
        old.signal(Signal::SIGTERM);
        std::thread::sleep(PROPAGATION);
        reload(&others);
        // nginx's graceful stop (SIGQUIT) is the child's exit: 0.
        let stopping = Instant::now();
        assert_eq!(old.wait_exit(PATIENCE), 0, "{}", old.logs());
        eprintln!(
            "backend {i} exited {:?} after the reload",
            stopping.elapsed()
        );
        let report = old.report();
        assert_eq!(report["child"]["killed"], false, "{report}");
        backends.insert(
            i,
            supervised_nginx(dir.path(), &format!("backend{i}-1"), ports[i]),
        );
        reload(&ports);
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = stop.send(());
    let report = load.join().unwrap();
    eprintln!(
        "nginx behind a proxy, {} restarts: {} requests, {} failed ({:?})",
        ports.len(),
        report.counts.total(),
        report.counts.failures(),
        report.counts
    );
    for backend in &mut backends {
        backend.signal(Signal::SIGTERM);
        assert_eq!(backend.wait_exit(PATIENCE), 0);
    }
    front.signal(Signal::SIGQUIT);
    let _ = front.wait_exit(PATIENCE);
    assert!(report.counts.ok > 0, "{report:?}");
    assert_eq!(report.counts.failures(), 0, "{report:?}");
}

//! A service for the watchdog test whose only runtime thread can be blocked: the admin
//! endpoints on `LAMEDUCK_ADMIN_ADDR`, the lifecycle configured from the environment, a
//! current-thread runtime, and, with `BLOCKER_HOOK_BLOCKS=1`, a Draining hook that blocks
//! that thread (`std::thread::sleep`) so the runtime can never finish the shutdown; with
//! `BLOCKER_BLOCKS_WHEN_READY=1`, the thread is blocked as soon as the service is Ready, so
//! that no signal can even be heard on the runtime.
//! Prints `blocker: ready` on stderr once Ready.

use std::time::Duration;

use lameduck::{Lifecycle, Phase};
use lameduck_axum::Admin;

fn main() -> lameduck::Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let lifecycle =
            Lifecycle::from_env().unwrap_or_else(|error| lameduck::exit_on_config_error(error));
        if std::env::var("BLOCKER_HOOK_BLOCKS").is_ok_and(|v| v == "1") {
            lifecycle.on_shutdown("block-the-runtime", Phase::Draining, || async {
                eprintln!("blocker: blocking the runtime thread");
                // Not `tokio::time::sleep`: the thread itself is taken, as a blocking
                // call in async code would take it.
                std::thread::sleep(Duration::from_secs(3600));
            });
        }
        let _admin = Admin::from_env(&lifecycle)
            .unwrap_or_else(|error| lameduck::exit_on_config_error(error))
            .spawn()
            .await
            .expect("serve the admin endpoints");
        let run = tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.run().await }
        });
        lifecycle.ready().await;
        eprintln!("blocker: ready");
        if std::env::var("BLOCKER_BLOCKS_WHEN_READY").is_ok_and(|v| v == "1") {
            eprintln!("blocker: blocking the runtime thread before any signal");
            std::thread::sleep(Duration::from_secs(3600));
        }
        run.await.expect("the lifecycle task")
    })
}

//! The tracing spans of a shutdown: `shutdown{reason}` with a `state{state}` child per
//! state, `hook{hook, phase}` per hook, `task{task}` per tracked task; hooks and tasks run
//! within the span that was current where they were registered.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lameduck::{Lifecycle, Phase};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// `name{field=value ...}` of a span, kept in its extensions.
struct Described(String);

#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{}={:?}", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

/// An event's fields, and the spans it is in, innermost first.
type Seen = (String, Vec<String>);

/// Every event the subscriber saw.
#[derive(Clone, Default)]
struct Scopes(Arc<Mutex<Vec<Seen>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Scopes {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let span = ctx.span(id).unwrap();
        let described = format!("{}{{{}}}", span.name(), fields.0);
        span.extensions_mut().insert(Described(described));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| span.extensions().get::<Described>().unwrap().0.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push((fields.0, scope));
    }
}

impl Scopes {
    /// The spans of the first event whose fields contain `text`.
    fn of(&self, text: &str) -> Vec<String> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .find(|(fields, _)| fields.contains(text))
            .map(|(_, scope)| scope.clone())
            .unwrap_or_else(|| panic!("no event with {text:?} in {events:#?}"))
    }
}

// Global, and alone in its own test binary: tracing caches per-callsite interest
// process-wide, so a thread-local subscriber can miss events other tests' threads saw first.
#[tokio::test(start_paused = true)]
async fn hooks_and_tasks_run_in_their_registration_span_and_the_shutdown_has_its_own() {
    let scopes = Scopes::default();
    tracing_subscriber::registry()
        .with(scopes.clone())
        .try_init()
        .unwrap();

    let lifecycle = Lifecycle::builder()
        .exit_process(false)
        .no_termination_log()
        .no_signals()
        .shutdown_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    lifecycle.on_shutdown("deregister", Phase::Draining, || async {
        tracing::info!("deregistering");
    });
    tracing::info_span!("setup", component = "db").in_scope(|| {
        lifecycle.on_shutdown("close-db", Phase::AfterDrain, || async {
            tracing::info!("closing the pool");
        });
        lifecycle.spawn("consumer", |cancel| async move {
            cancel.cancelled().await;
            tracing::info!("consumer stopping");
        });
    });

    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert!(report.clean, "{report:?}");

    let shutdown = "shutdown{reason=api}".to_owned();
    let draining = "state{state=draining}".to_owned();
    let stopping = "state{state=stopping}".to_owned();
    let setup = "setup{component=db}".to_owned();
    assert_eq!(
        scopes.of("deregistering"),
        [
            "hook{hook=deregister phase=draining}".to_owned(),
            draining.clone(),
            shutdown.clone()
        ]
    );
    assert_eq!(
        scopes.of("closing the pool"),
        [
            "hook{hook=close-db phase=after_drain}".to_owned(),
            setup.clone()
        ]
    );
    assert_eq!(
        scopes.of("hook finished hook=close-db"),
        [
            "hook{hook=close-db phase=after_drain}".to_owned(),
            setup.clone()
        ]
    );
    assert_eq!(
        scopes.of("consumer stopping"),
        ["task{task=consumer}".to_owned(), setup]
    );
    assert_eq!(scopes.of("to=draining"), [draining, shutdown.clone()]);
    assert_eq!(scopes.of("to=stopping"), [stopping, shutdown]);
}

//! Clean-up that must happen on a panic in every build. The static build for images aborts
//! on panic (the `static-cli` profile, for its size), so no destructor runs then: what a
//! subcommand started and must not leave behind is ended from the panic hook instead.

/// Run `cleanup` on every panic from now on, after the panic's own message (and
/// backtrace, if asked for) has been printed; before unwinding or aborting.
pub(crate) fn on_panic(cleanup: impl Fn() + Send + Sync + 'static) {
    let print_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print_panic(info);
        cleanup();
    }));
}

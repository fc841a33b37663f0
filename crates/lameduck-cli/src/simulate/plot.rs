//! `--plot FILE`: the timeline as an SVG picture: requests per second by class as stacked
//! bars, with the trigger, SIGTERM, the readiness flip, the end of the propagation window
//! and the exit marked. Written by hand: a few dozen elements do not need a plotting crate
//! in a static binary.

use std::fmt::Write as _;

use lameduck_load::Class;

use super::verdict::Observed;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 80.0;

/// The colour of each class (failures warm, `ok` grey-green, `not_sent` light grey).
fn colour(class: Class) -> &'static str {
    match class {
        Class::Ok => "#8fb996",
        Class::NotSent => "#d0d0d0",
        Class::Refused => "#d62728",
        Class::NoResponse => "#ff7f0e",
        Class::Status5xx => "#9467bd",
        Class::Timeout => "#8c564b",
    }
}

/// The picture of `observed`.
pub(crate) fn svg(observed: &Observed, title: &str) -> String {
    let seconds = &observed.timeline;
    let first = seconds.first().map_or(-1, |s| s.from_s).min(-1);
    let last = seconds
        .last()
        .map_or(1, |s| s.from_s + 1)
        .max(i64::try_from(observed.exit_ms / 1000 + 1).unwrap_or(i64::MAX))
        .max(first + 2);
    let span = (last - first) as f64;
    let x = |t_s: f64| LEFT + (t_s - first as f64) / span * (WIDTH - LEFT - RIGHT);
    let peak = seconds
        .iter()
        .map(|s| s.counts.iter().map(|(_, n)| *n).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let y = |n: f64| HEIGHT - BOTTOM - n / peak * plot_height;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // Axes and the y scale.
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM
    );
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>"#,
        HEIGHT - BOTTOM
    );
    for fraction in [0.0, 0.5, 1.0] {
        let n = peak * fraction;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y(n) + 4.0,
            n.round()
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">requests / s</text>"#,
        TOP + plot_height / 2.0,
        TOP + plot_height / 2.0
    );
    for t in first..=last {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{t:+}</text>"#,
            x(t as f64),
            HEIGHT - BOTTOM + 16.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds from the trigger</text>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - BOTTOM + 34.0
    );
    // The bars: failures at the bottom, so a few stand out under many ok.
    let bar = (WIDTH - LEFT - RIGHT) / span * 0.8;
    for second in seconds {
        let mut base = 0.0;
        let order = [
            Class::Refused,
            Class::NoResponse,
            Class::Status5xx,
            Class::Timeout,
            Class::NotSent,
            Class::Ok,
        ];
        for class in order {
            let n = second
                .counts
                .iter()
                .find(|(c, _)| *c == class)
                .map_or(0, |(_, n)| *n) as f64;
            if n == 0.0 {
                continue;
            }
            let top = y(base + n);
            let height = (y(base) - top).max(1.0);
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{top:.1}" width="{bar:.1}" height="{height:.1}" fill="{}"><title>{} {}: {n}</title></rect>"#,
                x(second.from_s as f64) + bar * 0.125,
                colour(class),
                second.from_s,
                class.as_str()
            );
            base += n;
        }
    }
    // The markers.
    let mut markers = vec![(0, "trigger", "#000000")];
    if observed.sigterm_ms > 0 {
        markers.push((observed.sigterm_ms, "SIGTERM", "#444444"));
    }
    if let Some(flip) = observed.ready_flip_ms {
        markers.push((flip, "not ready", "#1f77b4"));
    }
    let propagation = u64::try_from(observed.propagation.as_millis()).unwrap_or(u64::MAX);
    markers.push((propagation, "traffic stops", "#7f7f7f"));
    markers.push((
        observed.exit_ms,
        if observed.killed { "SIGKILL" } else { "exit" },
        if observed.killed {
            "#d62728"
        } else {
            "#2ca02c"
        },
    ));
    for (i, (ms, label, stroke)) in markers.iter().enumerate() {
        let at = x(*ms as f64 / 1000.0);
        let _ = writeln!(
            out,
            r#"<line x1="{at:.1}" y1="{TOP}" x2="{at:.1}" y2="{}" stroke="{stroke}" stroke-dasharray="4 3"/>"#,
            HEIGHT - BOTTOM
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" fill="{stroke}">{label}</text>"#,
            at + 3.0,
            TOP + 12.0 + 13.0 * (i % 4) as f64
        );
    }
    // The legend.
    let mut legend_x = LEFT;
    for class in [
        Class::Ok,
        Class::Refused,
        Class::NoResponse,
        Class::Status5xx,
        Class::Timeout,
    ] {
        let _ = writeln!(
            out,
            r#"<rect x="{legend_x}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            HEIGHT - 22.0,
            colour(class),
            legend_x + 14.0,
            HEIGHT - 13.0,
            class.as_str()
        );
        legend_x += 110.0;
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::verdict::Second;
    use std::time::Duration;

    #[test]
    fn the_picture_has_the_bars_the_markers_and_the_legend() {
        let observed = Observed {
            timeline: vec![
                Second {
                    from_s: -1,
                    counts: vec![(Class::Ok, 500)],
                },
                Second {
                    from_s: 0,
                    counts: vec![(Class::Ok, 300), (Class::Refused, 200)],
                },
            ],
            ready_flip_ms: Some(12),
            exit_ms: 800,
            propagation: Duration::from_secs(2),
            ..Observed::default()
        };
        let svg = svg(&observed, "a <title>");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;title&gt;"));
        assert!(svg.contains("<title>0 refused: 200</title>"), "{svg}");
        assert!(svg.contains("<title>-1 ok: 500</title>"), "{svg}");
        for marker in ["trigger", "not ready", "traffic stops", ">exit<"] {
            assert!(svg.contains(marker), "no {marker} in {svg}");
        }
        assert!(!svg.contains("NaN"), "{svg}");
    }

    #[test]
    fn an_empty_run_still_draws() {
        let svg = svg(&Observed::default(), "empty");
        assert!(svg.contains("</svg>"));
        assert!(!svg.contains("NaN"), "{svg}");
    }
}

//! What the process-wide subscriber lets through, decided once per
//! callsite: events by the log level, spans by whether they belong to a
//! trace. One filter for the whole subscriber, not one per layer: with a
//! filter per layer, tracing-subscriber looks every span up again in its
//! registry on every enter, exit, record and close (a RAG query enters its
//! spans about twenty times), which was about a fifth of what making a
//! query's spans cost.

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{FilterFn, ParseError, Targets};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Events at or above the log level of their target; spans only when
/// `spans` is set and they are Keel's own or those of the gRPC tower layers
/// (never hyper's, h2's or sqlx's, which would multiply every trace).
pub fn callsites(
    log_levels: Targets,
    spans: Option<Targets>,
) -> FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    FilterFn::new(move |metadata: &Metadata<'_>| {
        if metadata.is_span() {
            spans
                .as_ref()
                .is_some_and(|spans| spans.would_enable(metadata.target(), metadata.level()))
        } else {
            log_levels.would_enable(metadata.target(), metadata.level())
        }
    })
}

/// The spans that become OpenTelemetry spans.
pub fn traced_spans(grpc_span_target: &str) -> Targets {
    Targets::new()
        .with_target("keel", Level::INFO)
        .with_target(grpc_span_target, Level::INFO)
}

/// `RUST_LOG` (comma-separated `target=level` directives, or a bare level)
/// when it is set and reads, else `default`.
pub fn log_levels(default: &str) -> Targets {
    let parse = |text: &str| text.parse::<Targets>();
    match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => parse(&text).unwrap_or_else(|error: ParseError| {
            eprintln!("RUST_LOG={text:?} not understood ({error}); logging at {default:?}");
            parse(default).unwrap_or_default()
        }),
        _ => parse(default).unwrap_or_default(),
    }
}

/// A layer that is shown events only. The log layer needs no span's
/// fields: a log line stays one line, and the spans made for traces cost it
/// nothing (the fmt layer would otherwise format every span's fields when
/// the span is made).
pub struct EventsOnly<L>(pub L);

impl<S, L> Layer<S> for EventsOnly<L>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        self.0.on_event(event, context);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::span;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Records what reaches it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_new_span(&self, attributes: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
            let metadata = attributes.metadata();
            let seen = format!("span {} {}", metadata.target(), metadata.name());
            self.0.lock().unwrap().push(seen);
        }

        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let metadata = event.metadata();
            let seen = format!("event {} {}", metadata.target(), metadata.level());
            self.0.lock().unwrap().push(seen);
        }
    }

    fn emit() {
        let query = tracing::info_span!(target: "keel_serving::pipeline", "query");
        let _entered = query.enter();
        let _poll = tracing::info_span!(target: "h2::proto", "poll").entered();
        let _call = tracing::info_span!(target: "otel::tracing", "call").entered();
        tracing::debug!(target: "keel_serving::pipeline", "too fine");
        tracing::info!(target: "keel_serving::pipeline", "kept");
        tracing::info!(target: "sqlx::query", "too chatty");
        tracing::warn!(target: "sqlx::query", "slow");
    }

    fn seen_with(
        spans: Option<Targets>,
        layer: impl FnOnce(Seen) -> Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>,
    ) -> Vec<String> {
        let seen = Seen::default();
        // The filter outermost: it decides for every layer under it alike.
        let subscriber = tracing_subscriber::registry()
            .with(layer(seen.clone()))
            .with(callsites("info,sqlx=warn".parse().unwrap(), spans));
        tracing::subscriber::with_default(subscriber, emit);
        let seen = seen.0.lock().unwrap().clone();
        seen
    }

    #[test]
    fn traced_spans_and_events_at_their_level_pass() {
        let seen = seen_with(Some(traced_spans("otel::tracing")), |seen| Box::new(seen));
        assert_eq!(
            seen,
            [
                "span keel_serving::pipeline query",
                "span otel::tracing call",
                "event keel_serving::pipeline INFO",
                "event sqlx::query WARN",
            ]
        );
    }

    #[test]
    fn without_traces_no_span_is_made() {
        let seen = seen_with(None, |seen| Box::new(seen));
        assert_eq!(
            seen,
            [
                "event keel_serving::pipeline INFO",
                "event sqlx::query WARN"
            ]
        );
    }

    #[test]
    fn the_log_layer_is_shown_events_only() {
        let seen = seen_with(Some(traced_spans("otel::tracing")), |seen| {
            Box::new(EventsOnly(seen))
        });
        assert_eq!(
            seen,
            [
                "event keel_serving::pipeline INFO",
                "event sqlx::query WARN"
            ]
        );
    }

    #[test]
    fn rust_log_directives_parse_as_targets() {
        let levels: Targets = "keel_serving=debug,warn".parse().unwrap();
        assert!(levels.would_enable("keel_serving::api", &Level::DEBUG));
        assert!(!levels.would_enable("h2", &Level::INFO));
        assert!(levels.would_enable("h2", &Level::WARN));
    }
}

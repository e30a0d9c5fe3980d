//! Result files of bulk operations: `GET /bulk/{n}.jsonl` and `{n}-partial.jsonl`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{Contents, Resource, Shared, Source, Status, SyntheticStore, UpdatedRange, lock};
use std::sync::Arc;

pub(super) async fn download(State(shared): State<Shared>, Path(file): Path<String>) -> Response {
    let mut s = lock(&shared);
    let Some(name) = file.strip_suffix(".jsonl") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (number, partial) = match name.strip_suffix("-partial") {
        Some(n) => (n, true),
        None => (name, false),
    };
    let text = {
        let Some(op) = number
            .parse::<u64>()
            .ok()
            .and_then(|n| s.ops.iter().find(|o| o.number == n))
        else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let all = match (&op.contents, &s.store) {
            (Contents::Lines(l), _) => l.as_slice(),
            (
                Contents::Synthetic {
                    resource, range, ..
                },
                Source::Synthetic(store),
            ) if op.status == Status::Completed && !partial => {
                let stream = stream_synthetic(store.clone(), *resource, *range, op.number);
                s.stats.downloads += 1;
                return (
                    [("content-type", "application/jsonl")],
                    axum::body::Body::from_stream(stream),
                )
                    .into_response();
            }
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        let lines = match (op.status, partial) {
            (Status::Completed, false) => all,
            (Status::Failed, true) => all.get(..s.partial_len(op)).unwrap_or_default(),
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text
    };
    s.stats.downloads += 1;
    ([("content-type", "application/jsonl")], text).into_response()
}

/// A synthetic file as a body stream: generated on a blocking thread, a few chunks ahead of
/// the client (a bounded channel), abandoned when the client disconnects.
fn stream_synthetic(
    store: Arc<SyntheticStore>,
    resource: Resource,
    range: UpdatedRange,
    op: u64,
) -> impl futures::Stream<Item = Result<String, std::convert::Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(4);
    tokio::task::spawn_blocking(move || {
        store.stream(resource, range, op, |chunk| tx.blocking_send(chunk).is_ok());
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok(chunk), rx))
    })
}

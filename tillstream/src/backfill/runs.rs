//! Sorted runs of events on disk and their k-way merge: the event-time order of a whole store
//! without holding it in memory.
//!
//! Each reassembled bucket's events are sorted and written as one run; the runs are merged
//! (at most [`FAN_IN`] at a time, merging groups into longer runs first when there are more)
//! into one stream in `(event time, delivery id, body)` order. That order is total and does not
//! depend on how objects were bucketed, so a rebuilt spill yields the same sequence and a
//! checkpoint's "first N events were acknowledged" stays true across crashes.
//!
//! Record format: `at_ms` (i64 LE), topic index into [`convert::TOPICS`] (u8), delivery id
//! length (u32 LE) and bytes, body length (u32 LE) and bytes.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::convert::{self, Event};

/// Most runs read at once by a merge.
pub(crate) const FAN_IN: usize = 32;

fn order(a: &Event, b: &Event) -> Ordering {
    (a.at_ms, &a.delivery_id, &a.body).cmp(&(b.at_ms, &b.delivery_id, &b.body))
}

/// Sorts events into production order.
pub(crate) fn sort(events: &mut [Event]) {
    events.sort_by(order);
}

fn len32(n: usize, what: &str) -> anyhow::Result<[u8; 4]> {
    u32::try_from(n)
        .map(u32::to_le_bytes)
        .with_context(|| format!("{what} of {n} bytes is too large for a run file"))
}

fn write_event(w: &mut impl Write, e: &Event) -> anyhow::Result<()> {
    let topic = convert::TOPICS
        .iter()
        .position(|t| *t == e.topic)
        .with_context(|| format!("unknown backfill topic {}", e.topic))?;
    w.write_all(&e.at_ms.to_le_bytes())?;
    w.write_all(&[u8::try_from(topic)?])?;
    w.write_all(&len32(e.delivery_id.len(), "a delivery id")?)?;
    w.write_all(e.delivery_id.as_bytes())?;
    w.write_all(&len32(e.body.len(), "a body")?)?;
    w.write_all(&e.body)?;
    Ok(())
}

/// Writes sorted `events` to `path`; returns the file's length.
pub(crate) fn write(
    path: &Path,
    events: impl IntoIterator<Item = anyhow::Result<Event>>,
) -> anyhow::Result<u64> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(64 * 1024, file);
    for e in events {
        write_event(&mut w, &e?).with_context(|| format!("writing {}", path.display()))?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Reads one run file front to back.
pub(crate) struct RunReader {
    path: PathBuf,
    r: BufReader<File>,
}

impl RunReader {
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            r: BufReader::with_capacity(32 * 1024, file),
        })
    }

    fn bytes(&mut self, n: usize) -> anyhow::Result<Vec<u8>> {
        let mut b = vec![0; n];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }

    fn len(&mut self) -> anyhow::Result<usize> {
        let mut b = [0; 4];
        self.r.read_exact(&mut b)?;
        Ok(usize::try_from(u32::from_le_bytes(b))?)
    }

    /// The next event; `None` at the end.
    pub(crate) fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        let mut at = [0; 8];
        match self.r.read_exact(&mut at) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
        let read = |me: &mut Self| -> anyhow::Result<Event> {
            let mut t = [0; 1];
            me.r.read_exact(&mut t)?;
            let topic = *convert::TOPICS
                .get(usize::from(t[0]))
                .context("unknown topic index")?;
            let n = me.len()?;
            let delivery_id = String::from_utf8(me.bytes(n)?)?;
            let n = me.len()?;
            let body = me.bytes(n)?;
            Ok(Event {
                topic,
                at_ms: i64::from_le_bytes(at),
                delivery_id,
                body,
            })
        };
        read(self)
            .map(Some)
            .with_context(|| format!("{} is truncated or corrupt", self.path.display()))
    }
}

struct Head {
    event: Event,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        order(&self.event, &other.event).then(self.source.cmp(&other.source))
    }
}

/// The merged stream of up to [`FAN_IN`] runs.
pub(crate) struct Merge {
    readers: Vec<RunReader>,
    heap: BinaryHeap<Reverse<Head>>,
    /// A read error found while refilling, returned after the event already popped.
    failed: Option<anyhow::Error>,
}

impl Merge {
    pub(crate) fn open(paths: &[PathBuf]) -> anyhow::Result<Self> {
        if paths.len() > FAN_IN {
            bail!("{} runs to merge at once (at most {FAN_IN})", paths.len());
        }
        let mut readers = paths
            .iter()
            .map(|p| RunReader::open(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (source, r) in readers.iter_mut().enumerate() {
            if let Some(event) = r.next_event()? {
                heap.push(Reverse(Head { event, source }));
            }
        }
        Ok(Self {
            readers,
            heap,
            failed: None,
        })
    }
}

impl Iterator for Merge {
    type Item = anyhow::Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            self.heap.clear();
            return Some(Err(e));
        }
        let Reverse(Head { event, source }) = self.heap.pop()?;
        match self.readers[source].next_event() {
            Ok(Some(next)) => self.heap.push(Reverse(Head {
                event: next,
                source,
            })),
            Ok(None) => {}
            Err(e) => self.failed = Some(e),
        }
        Some(Ok(event))
    }
}

/// Merges runs into longer ones until at most `limit` (≤ [`FAN_IN`]) are left; merged
/// inputs are deleted. `name` gives each new run's path.
pub(crate) fn reduce(
    mut runs: Vec<PathBuf>,
    limit: usize,
    mut name: impl FnMut() -> PathBuf,
) -> anyhow::Result<Vec<PathBuf>> {
    let limit = limit.clamp(1, FAN_IN);
    while runs.len() > limit {
        let take = (runs.len() - limit + 1).min(FAN_IN);
        let group: Vec<PathBuf> = runs.drain(..take).collect();
        let out = name();
        write(&out, Merge::open(&group)?)?;
        for p in &group {
            std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        }
        runs.push(out);
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at_ms: i64, id: &str) -> Event {
        Event {
            topic: "orders/paid",
            at_ms,
            delivery_id: id.into(),
            body: format!("{{\"n\":\"{id}\"}}").into_bytes(),
        }
    }

    #[test]
    fn runs_round_trip_and_merge_in_event_time_order_through_several_levels() {
        let dir = std::env::temp_dir().join(format!("tillstream-runs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut all = Vec::new();
        let mut runs = Vec::new();
        // 70 runs (more than FAN_IN), interleaved times, equal times broken by id.
        for r in 0..70i64 {
            let mut events: Vec<Event> = (0..20)
                .map(|i| ev((i * 7 + r * 3) % 50, &format!("d-{r}-{i}")))
                .collect();
            sort(&mut events);
            all.extend(events.clone());
            let path = dir.join(format!("run-{r}"));
            write(&path, events.into_iter().map(Ok)).unwrap();
            runs.push(path);
        }
        let mut n = 0;
        let runs = reduce(runs, 4, || {
            n += 1;
            dir.join(format!("merged-{n}"))
        })
        .unwrap();
        assert_eq!(runs.len(), 4);
        sort(&mut all);
        let merged: Vec<Event> = Merge::open(&runs).unwrap().map(Result::unwrap).collect();
        assert_eq!(merged, all);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_truncated_run_is_an_error_not_a_short_stream() {
        let dir = std::env::temp_dir().join(format!("tillstream-runs-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run");
        let len = write(&path, [Ok(ev(1, "a")), Ok(ev(2, "b"))]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..usize::try_from(len).unwrap() - 3]).unwrap();
        let got: Vec<_> = Merge::open(&[path]).unwrap().collect();
        assert!(got[0].is_ok() && got[1].is_err(), "{got:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

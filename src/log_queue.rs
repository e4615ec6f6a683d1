//! The daemon's log lines, written out by a thread of their own so a slow journal never
//! holds up the event loop.
//!
//! tracing-appender's non-blocking writer does the same, but wakes its thread for every
//! line: a futex wake on the logging thread, then a spin and a park on the writer's, for
//! each of the two lines an SA setup logs, about 8 % of the daemon's CPU per setup. Here
//! the writer is woken when the queue turns non-empty, lets the lines of a busy moment
//! gather for a few milliseconds and writes them in one call.
//!
//! No line is dropped while the daemon runs: a logging thread waits while the queue holds
//! its limit of bytes, and [`Written`] writes out what is queued when it goes.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Bytes of room the writer keeps between batches.
const KEPT_ROOM: usize = 64 << 10;

/// Where log lines are queued; a `tracing_subscriber` writer.
#[derive(Clone)]
pub struct LogQueue {
    shared: Arc<Shared>,
}

/// Writes out the queued lines and stops the writer thread when dropped.
pub struct Written {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// The writer waits here for lines.
    queued: Condvar,
    /// Logging threads wait here for room.
    drained: Condvar,
    limit: usize,
    gather: Duration,
}

#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer hurries once half the room is taken, so loggers rarely wait.
    fn half_full(&self, queue: &Queue) -> bool {
        queue.lines.len() >= self.limit / 2
    }
}

impl LogQueue {
    /// Starts the writer thread `name`, writing to `sink`; the queue holds up to `limit`
    /// bytes, and lines gather for up to `gather` before a write.
    pub fn start(
        sink: impl Write + Send + 'static,
        limit: usize,
        gather: Duration,
        name: &str,
    ) -> io::Result<(Self, Written)> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            queued: Condvar::new(),
            drained: Condvar::new(),
            limit,
            gather,
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || write_out(&writer, sink))?;
        let written = Written {
            shared: shared.clone(),
            thread: Some(thread),
        };
        Ok((Self { shared }, written))
    }
}

fn write_out(shared: &Shared, mut sink: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut queue = shared.lock();
        while queue.lines.is_empty() && !queue.closed {
            queue = shared
                .queued
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if queue.lines.is_empty() {
            return;
        }
        queue = shared
            .queued
            .wait_timeout_while(queue, shared.gather, |q| !q.closed && !shared.half_full(q))
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        std::mem::swap(&mut queue.lines, &mut batch);
        drop(queue);
        shared.drained.notify_all();
        // A sink that fails (stderr closed) has nowhere to report it: the lines go.
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        batch.clear();
        // A burst (thousands of neighbors starting) need not stay resident.
        batch.shrink_to(KEPT_ROOM);
    }
}

impl Write for &LogQueue {
    /// Queues all of `line` (tracing formats an event whole and writes it in one call,
    /// so lines never interleave).
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = &*self.shared;
        let mut queue = shared.lock();
        // A line longer than the limit still goes, alone.
        while !queue.closed
            && !queue.lines.is_empty()
            && queue.lines.len() + line.len() > shared.limit
        {
            queue = shared
                .drained
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if queue.closed {
            return Ok(line.len());
        }
        let was_empty = queue.lines.is_empty();
        let was_half_full = shared.half_full(&queue);
        queue.lines.extend_from_slice(line);
        let wake = was_empty || (!was_half_full && shared.half_full(&queue));
        drop(queue);
        if wake {
            shared.queued.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogQueue {
    type Writer = &'a LogQueue;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.queued.notify_one();
        self.shared.drained.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that keeps what it is given and the size of each write.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, Vec<usize>)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut kept = self.0.lock().unwrap();
            kept.0.extend_from_slice(buf);
            kept.1.push(buf.len());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }

        fn writes(&self) -> Vec<usize> {
            self.0.lock().unwrap().1.clone()
        }
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_even_through_a_small_queue() {
        let sink = Sink::default();
        let limit = 256;
        let (queue, written) =
            LogQueue::start(sink.clone(), limit, Duration::from_millis(1), "log-test").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for n in 0..2000 {
                        (&queue)
                            .write_all(format!("thread {t} line {n}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(written);
        let mut next = [0; 4];
        for line in sink.text().lines() {
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(words.len(), 4, "a line cut or run together: {line:?}");
            let t: usize = words[1].parse().unwrap();
            assert_eq!(words[3].parse::<usize>().unwrap(), next[t], "out of order");
            next[t] += 1;
        }
        assert_eq!(next, [2000; 4], "lines lost");
        let writes = sink.writes();
        assert!(
            writes.iter().all(|&w| w <= limit),
            "the queue outgrew its limit: {writes:?}"
        );
    }

    #[test]
    fn the_lines_of_a_burst_go_out_in_one_write() {
        let sink = Sink::default();
        let (queue, written) =
            LogQueue::start(sink.clone(), 1 << 20, Duration::from_secs(60), "log-test").unwrap();
        for n in 0..100 {
            (&queue)
                .write_all(format!("line {n}\n").as_bytes())
                .unwrap();
        }
        // The writer is gathering (for up to a minute); going ends the gathering and
        // writes out the queue.
        drop(written);
        assert_eq!(sink.text().lines().count(), 100);
        assert_eq!(sink.writes().len(), 1, "{:?}", sink.writes());
    }

    #[test]
    fn a_line_longer_than_the_queue_still_goes() {
        let sink = Sink::default();
        let (queue, written) =
            LogQueue::start(sink.clone(), 8, Duration::from_millis(1), "log-test").unwrap();
        (&queue).write_all(b"short\n").unwrap();
        (&queue)
            .write_all(b"a line of more than eight bytes\n")
            .unwrap();
        drop(written);
        assert_eq!(sink.text(), "short\na line of more than eight bytes\n");
    }
}

//! One llama.cpp computation at a time, shared fairly between the threads
//! that compute.
//!
//! llama.cpp is built without OpenMP: ggml's own thread pool synchronises
//! its threads with barriers that spin, which is what lets a lone model run
//! at llama.cpp's full speed (OpenMP's barriers are throttled as soon as
//! two contexts exist, and that cost 17% of decode speed on 2 cores).
//! Spinning threads must not share cores, though: with the embedder and the
//! generator computing at once on 2 cores, each barrier waited for a thread
//! the kernel had parked, and decode fell from 64 to 5 tokens/s. Every
//! context already uses all the cores it is given, so computations take
//! turns instead: one llama.cpp call (a prompt chunk, one generated token,
//! one embedding batch) runs at a time.
//!
//! The CPU goes to the waiting thread that has used the least CPU time, as
//! Linux's CFS does; plain arrival order would give each thread one call
//! per round, and one embedding batch takes as long as a dozen generated
//! tokens. A job (a generation, an embedding request) keeps the CPU from
//! one call to its next until a waiter has used less than it: a thread
//! that let go between two calls (to sample a token) would find another
//! thread's call running every time it came back. For the same reason a
//! job that ends behind the waiters keeps the CPU free for its thread's
//! next job for [`ANTICIPATION`]. A thread back from idle (later than
//! that) keeps at most [`IDLE_CREDIT`] of the time it did not use.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::DecodeError;

/// One job's share of the CPU. The turn is taken at the job's first
/// llama.cpp call and given back when the share is dropped.
pub(crate) struct CpuShare {
    /// Once taken, holds this thread's CPU time so far, on the queue's clock.
    turn: Option<Turn<'static>>,
}

impl CpuShare {
    pub(crate) fn new() -> CpuShare {
        CpuShare { turn: None }
    }

    /// Whether this thread's last job ended within [`ANTICIPATION`].
    fn arrival() -> Arrival {
        match LAST_JOB_ENDED.get() {
            Some(ended) if ended.elapsed() <= ANTICIPATION => Arrival::Continuing,
            _ => Arrival::BackFromIdle,
        }
    }

    /// Runs `batch` through `context` once this job's turn comes.
    pub(crate) fn decode(
        &mut self,
        context: &mut LlamaContext<'_>,
        batch: &mut LlamaBatch,
    ) -> Result<(), DecodeError> {
        let turn = match self.turn.take() {
            Some(mut turn) => {
                turn.used = turn.yield_to_waiters_behind(turn.used);
                turn
            }
            None => CPU.take_turn(CPU_TIME_USED.get(), CpuShare::arrival()).0,
        };
        let turn = self.turn.insert(turn);
        let started = Instant::now();
        let result = context.decode(batch);
        turn.used += started.elapsed();
        CPU_TIME_USED.set(turn.used);
        result
    }
}

static CPU: TurnQueue = TurnQueue::new(ANTICIPATION);

/// How far behind the clock a thread's CPU time may be when it asks for a
/// turn; about one embedding batch.
const IDLE_CREDIT: Duration = Duration::from_millis(250);

/// How long the CPU stays free for a thread whose job ended while it was
/// behind the waiters: long enough for a caller in a loop to send the next
/// job, short enough that a thread that does not come back costs little.
const ANTICIPATION: Duration = Duration::from_millis(5);

thread_local! {
    /// This thread's CPU time in llama.cpp calls, on the queue's clock,
    /// carried from one job to the next.
    static CPU_TIME_USED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// When this thread's last job gave the CPU back.
    static LAST_JOB_ENDED: Cell<Option<Instant>> = const { Cell::new(None) };
}

impl Drop for CpuShare {
    fn drop(&mut self) {
        if self.turn.is_some() {
            LAST_JOB_ENDED.set(Some(Instant::now()));
        }
    }
}

/// How a thread comes to ask for the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// It holds the CPU, or its last job ended a moment ago: it keeps the
    /// CPU time it is behind by.
    Continuing,
    /// It was idle: it keeps at most [`IDLE_CREDIT`] of it.
    BackFromIdle,
}

struct TurnQueue {
    /// [`ANTICIPATION`], but for tests.
    anticipation: Duration,
    state: Mutex<QueueState>,
    turn_over: Condvar,
}

struct QueueState {
    running: bool,
    /// The most CPU time a thread had used when it held the CPU; less
    /// [`IDLE_CREDIT`], where a thread back from idle starts.
    clock: Duration,
    /// Tickets of the threads waiting, with the CPU time each is charged.
    waiting: Vec<Waiter>,
    next_ticket: u64,
    /// The thread the CPU is kept free for, and until when.
    kept_for: Option<(ThreadId, Instant)>,
}

/// Ordered by CPU time used, then by arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Waiter {
    used: Duration,
    ticket: u64,
}

/// Holds the CPU until dropped, also when the computation panics.
struct Turn<'queue> {
    queue: &'queue TurnQueue,
    /// The holder's CPU time so far.
    used: Duration,
}

impl TurnQueue {
    const fn new(anticipation: Duration) -> TurnQueue {
        TurnQueue {
            anticipation,
            state: Mutex::new(QueueState {
                running: false,
                clock: Duration::ZERO,
                waiting: Vec::new(),
                next_ticket: 0,
                kept_for: None,
            }),
            turn_over: Condvar::new(),
        }
    }

    /// Waits until no computation runs and no waiter has used less CPU time
    /// than `used` (or the same and came earlier); returns the turn and the
    /// CPU time this thread is charged with from now on.
    fn take_turn(&self, used: Duration, arrival: Arrival) -> (Turn<'_>, Duration) {
        let (_state, charged_from) = self.wait_for_turn(self.lock(), used, arrival);
        let turn = Turn {
            queue: self,
            used: charged_from,
        };
        (turn, charged_from)
    }

    fn wait_for_turn<'state>(
        &'state self,
        mut state: MutexGuard<'state, QueueState>,
        used: Duration,
        arrival: Arrival,
    ) -> (MutexGuard<'state, QueueState>, Duration) {
        let used = match arrival {
            Arrival::Continuing => used,
            Arrival::BackFromIdle => used.max(state.clock.saturating_sub(IDLE_CREDIT)),
        };
        let me = Waiter {
            used,
            ticket: state.next_ticket,
        };
        state.next_ticket += 1;
        state.waiting.push(me);
        let thread = thread::current().id();
        loop {
            if state.running || state.waiting.iter().min() != Some(&me) {
                state = self
                    .turn_over
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            match state.kept_for {
                Some((kept_for, until)) if kept_for != thread && Instant::now() < until => {
                    let wait = until.saturating_duration_since(Instant::now());
                    state = self
                        .turn_over
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                _ => break,
            }
        }
        state.waiting.retain(|waiter| *waiter != me);
        state.kept_for = None;
        state.running = true;
        state.clock = state.clock.max(me.used);
        (state, me.used)
    }

    /// The state stays consistent whatever a panicking holder was doing,
    /// so a poisoned lock is still good.
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Turn<'_> {
    /// Keeps the CPU for a holder that has now used `used`, unless a waiter
    /// has used less: then hands it over and waits for the next turn.
    /// Returns the CPU time the holder is charged with.
    fn yield_to_waiters_behind(&mut self, used: Duration) -> Duration {
        let mut state = self.queue.lock();
        state.clock = state.clock.max(used);
        if !state.waiting.iter().any(|waiter| waiter.used < used) {
            return used;
        }
        state.running = false;
        self.queue.turn_over.notify_all();
        let (_state, charged_from) = self.queue.wait_for_turn(state, used, Arrival::Continuing);
        charged_from
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.running = false;
        let behind = state
            .waiting
            .iter()
            .min()
            .is_some_and(|waiter| self.used < waiter.used);
        if behind {
            let until = Instant::now() + self.queue.anticipation;
            state.kept_for = Some((thread::current().id(), until));
        }
        self.queue.turn_over.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn millis(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    /// Starts a thread that waits for a turn as a thread back from idle
    /// that used `used`, and then records `label`; returns once it is in
    /// the queue.
    fn queue_up(
        queue: &Arc<TurnQueue>,
        order: &Arc<Mutex<Vec<&'static str>>>,
        label: &'static str,
        used: Duration,
    ) -> thread::JoinHandle<()> {
        queue_up_as(queue, order, label, used, Arrival::BackFromIdle)
    }

    fn queue_up_as(
        queue: &Arc<TurnQueue>,
        order: &Arc<Mutex<Vec<&'static str>>>,
        label: &'static str,
        used: Duration,
        arrival: Arrival,
    ) -> thread::JoinHandle<()> {
        let waiting_before = queue.lock().waiting.len();
        let (queue_for_thread, order) = (Arc::clone(queue), Arc::clone(order));
        let handle = thread::spawn(move || {
            let _turn = queue_for_thread.take_turn(used, arrival);
            order.lock().unwrap().push(label);
        });
        while queue.lock().waiting.len() == waiting_before {
            thread::yield_now();
        }
        handle
    }

    #[test]
    fn the_waiter_that_used_least_goes_first_then_arrival_order() {
        let queue = Arc::new(TurnQueue::new(ANTICIPATION));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (holder, _) = queue.take_turn(Duration::ZERO, Arrival::BackFromIdle);
        let waiters = [
            queue_up(&queue, &order, "used 30", millis(30)),
            queue_up(&queue, &order, "used 10, first", millis(10)),
            queue_up(&queue, &order, "used 20", millis(20)),
            queue_up(&queue, &order, "used 10, second", millis(10)),
        ];
        assert!(
            order.lock().unwrap().is_empty(),
            "nobody runs while the CPU is held"
        );
        drop(holder);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["used 10, first", "used 10, second", "used 20", "used 30"]
        );
    }

    #[test]
    fn a_thread_back_from_idle_keeps_only_the_idle_credit() {
        let queue = Arc::new(TurnQueue::new(ANTICIPATION));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (holder, charged_from) = queue.take_turn(millis(1000), Arrival::BackFromIdle);
        assert_eq!(charged_from, millis(1000));
        let waiters = [
            queue_up(&queue, &order, "busy, used 1150", millis(1150)),
            queue_up(&queue, &order, "recent, used 800", millis(800)),
            queue_up(&queue, &order, "used 50, first", millis(50)),
            queue_up(&queue, &order, "idle, used 0", Duration::ZERO),
            queue_up_as(
                &queue,
                &order,
                "continuing, used 60",
                millis(60),
                Arrival::Continuing,
            ),
        ];
        drop(holder);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        // The two far behind and back from idle count as having used
        // 750 ms (the clock less the credit), so they go in arrival order;
        // charged with its real 0, the idle thread would have gone first.
        // The one within the credit keeps its 800, and the one that never
        // went idle its 60.
        assert_eq!(
            *order.lock().unwrap(),
            [
                "continuing, used 60",
                "used 50, first",
                "idle, used 0",
                "recent, used 800",
                "busy, used 1150"
            ]
        );
        assert_eq!(queue.lock().clock, millis(1150));
    }

    #[test]
    fn a_holder_keeps_the_cpu_until_a_waiter_has_used_less() {
        let queue = Arc::new(TurnQueue::new(ANTICIPATION));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (mut holder, _) = queue.take_turn(millis(1000), Arrival::BackFromIdle);
        let waiter = queue_up(&queue, &order, "waiter, used 1100", millis(1100));
        // Still ahead of the waiter: the holder keeps the CPU.
        assert_eq!(holder.yield_to_waiters_behind(millis(1080)), millis(1080));
        assert!(order.lock().unwrap().is_empty());
        // Now behind it: the waiter runs before the holder's next call.
        assert_eq!(holder.yield_to_waiters_behind(millis(1120)), millis(1120));
        assert_eq!(*order.lock().unwrap(), ["waiter, used 1100"]);
        waiter.join().unwrap();
        assert!(queue.lock().running, "the holder has the CPU again");
        assert_eq!(queue.lock().clock, millis(1120));
    }

    #[test]
    fn a_job_that_ends_behind_keeps_the_cpu_for_its_thread_a_moment() {
        let queue = Arc::new(TurnQueue::new(Duration::from_secs(600)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (mut holder, _) = queue.take_turn(millis(100), Arrival::BackFromIdle);
        let waiter = queue_up(&queue, &order, "waiter, used 500", millis(500));
        holder.used = millis(200);
        drop(holder);
        assert!(queue.lock().kept_for.is_some());
        // Behind the waiter: this thread's next job gets the CPU first.
        let (mut next_job, charged_from) = queue.take_turn(millis(200), Arrival::Continuing);
        assert_eq!(charged_from, millis(200));
        assert!(order.lock().unwrap().is_empty());
        // Ahead of it now: the waiter goes next.
        next_job.used = millis(600);
        drop(next_job);
        waiter.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["waiter, used 500"]);
        assert_eq!(queue.lock().kept_for, None);
    }

    #[test]
    fn the_cpu_kept_for_a_thread_that_does_not_come_back_goes_on() {
        let queue = Arc::new(TurnQueue::new(ANTICIPATION));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (holder, _) = queue.take_turn(millis(100), Arrival::BackFromIdle);
        let waiter = queue_up(&queue, &order, "waiter, used 500", millis(500));
        drop(holder);
        waiter.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["waiter, used 500"]);
    }

    #[test]
    fn a_panicking_holder_hands_the_cpu_on() {
        let queue = Arc::new(TurnQueue::new(ANTICIPATION));
        let holder = Arc::clone(&queue);
        let panicked = thread::spawn(move || {
            let _turn = holder.take_turn(Duration::ZERO, Arrival::BackFromIdle);
            panic!("computation failed");
        })
        .join();
        assert!(panicked.is_err());
        let (turn, _) = queue.take_turn(Duration::ZERO, Arrival::BackFromIdle);
        assert!(queue.lock().running);
        drop(turn);
        assert!(!queue.lock().running);
    }
}

//! The ledger writer: rows arrive over a channel from request handlers (and from the
//! `Drop` of a [`MeterGuard`] when a client goes away), are written in batches off the
//! request path, retried while the database is away, and flushed on shutdown.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{LedgerRow, Price, Usage};
use crate::store::Store;

enum Msg {
    Row(Box<LedgerRow>),
    Flush(oneshot::Sender<()>),
}

/// Sends rows to the background writer. Cloning is cheap.
#[derive(Clone)]
pub struct LedgerWriter {
    tx: mpsc::UnboundedSender<Msg>,
}

const MAX_BATCH: usize = 500;
const BATCH_WINDOW: Duration = Duration::from_millis(20);

impl LedgerWriter {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Store) -> LedgerWriter {
        // Unbounded on purpose: a row is never dropped for want of room; while the database
        // is away rows wait in memory and the retry loop below keeps trying.
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        LedgerWriter { tx }
    }

    pub fn record(&self, row: LedgerRow) {
        if self.tx.send(Msg::Row(Box::new(row))).is_err() {
            tracing::error!("ledger writer is gone; a ledger row was not recorded");
        }
    }

    /// Waits until every row sent before this call is in the database.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch: Vec<LedgerRow> = Vec::with_capacity(MAX_BATCH);
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let take = |m: Msg, batch: &mut Vec<LedgerRow>, acks: &mut Vec<oneshot::Sender<()>>| match m
        {
            Msg::Row(r) => batch.push(*r),
            Msg::Flush(a) => acks.push(a),
        };
        take(first, &mut batch, &mut acks);
        // A short window lets rows gather, so light traffic writes one transaction per
        // window rather than one per request (the database work then competes less with
        // requests for CPU); under heavy load batches fill up at once anyway. A flush
        // does not wait.
        if acks.is_empty() {
            tokio::time::sleep(BATCH_WINDOW).await;
        }
        // Whatever queued up meanwhile joins this batch: batches grow with load.
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => take(m, &mut batch, &mut acks),
                Err(_) => break,
            }
        }
        write_with_retry(&store, &batch).await;
        batch.clear();
        for a in acks.drain(..) {
            let _ = a.send(());
        }
    }
}

async fn write_with_retry(store: &Store, batch: &[LedgerRow]) {
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(50);
    loop {
        match store.insert_ledger(batch).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, rows = batch.len(), "ledger write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Holds a request's ledger row until the request ends. If it is dropped before
/// [`MeterGuard::finish`] (the client went away mid-stream, the handler was cancelled),
/// `Drop` still records the row, as a client-closed request with what was seen so far.
pub struct MeterGuard {
    writer: LedgerWriter,
    row: Option<LedgerRow>,
    started: Instant,
    price: Option<Price>,
    /// Characters of generated text seen, for an estimate when usage never arrives.
    pub generated_chars: usize,
    pub prompt_chars: usize,
    /// The budget hold taken for this request: settled to the row's cost when the row is
    /// recorded, on every path (success, failure, client gone).
    pub hold: Option<super::budget::Hold>,
    /// The request's place in its rate limits: released, and its tokens corrected to the
    /// real usage, when the row is recorded.
    pub permit: Option<super::limits::Permit>,
}

/// Status recorded for a request whose client went away before it ended (nginx's 499).
pub const CLIENT_CLOSED: u16 = 499;

impl MeterGuard {
    pub fn new(writer: LedgerWriter, row: LedgerRow, started: Instant) -> Self {
        MeterGuard {
            writer,
            row: Some(row),
            started,
            price: None,
            generated_chars: 0,
            prompt_chars: 0,
            hold: None,
            permit: None,
        }
    }

    /// The price the row's cost is computed with once usage is known.
    pub fn set_price(&mut self, price: Option<Price>) {
        self.price = price;
    }

    /// Cost of the usage recorded so far, in micro-dollars.
    pub fn cost_micros(&self) -> i64 {
        match (&self.row, self.price) {
            (Some(r), Some(p)) => p.cost_micros(&r.usage),
            _ => 0,
        }
    }

    pub fn row(&self) -> Option<&LedgerRow> {
        self.row.as_ref()
    }

    pub fn row_mut(&mut self) -> Option<&mut LedgerRow> {
        self.row.as_mut()
    }

    pub fn mark_first_byte(&mut self) {
        let ms = elapsed_ms(self.started);
        if let Some(r) = self.row.as_mut() {
            r.ttfb_ms.get_or_insert(ms);
        }
    }

    /// Records the row with its final status.
    pub fn finish(mut self, status: u16, error_type: Option<&'static str>) {
        self.complete(status, error_type);
    }

    fn complete(&mut self, status: u16, error_type: Option<&'static str>) {
        let latency = elapsed_ms(self.started);
        let (prompt_chars, generated_chars) = (self.prompt_chars, self.generated_chars);
        if let Some(mut row) = self.row.take() {
            row.status = status;
            row.error_type = error_type;
            row.latency_ms = latency;
            if row.usage == Usage::default()
                && (generated_chars > 0 || status == CLIENT_CLOSED)
                && row.ttfb_ms.is_some()
            {
                // The upstream did work but never said how much: estimate, and say so.
                row.usage.prompt_tokens = super::estimate_tokens(prompt_chars);
                row.usage.completion_tokens = super::estimate_tokens(generated_chars);
                row.usage_estimated = true;
            }
            if let Some(p) = self.price {
                row.cost_micros = p.cost_micros(&row.usage);
            }
            if let Some(hold) = self.hold.take() {
                hold.settle(row.cost_micros);
            }
            if let Some(permit) = self.permit.take() {
                permit.settle(row.usage.prompt_tokens + row.usage.completion_tokens);
            }
            self.writer.record(row);
        }
    }
}

impl Drop for MeterGuard {
    fn drop(&mut self) {
        if self.row.is_some() {
            self.complete(CLIENT_CLOSED, Some("client_closed"));
        }
    }
}

fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

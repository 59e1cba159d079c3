//! Dynamic batching and ensemble execution.
//!
//! Each model has `pool_size` worker threads. Each worker owns one session per member (and one
//! for the gate), so no session is shared and `Session::run(&mut self)` needs no lock. Workers
//! take jobs from one channel: the first job opens a batch, which takes every job already queued
//! (up to `max_batch` images; a multi-frame job is never split, so a batch can exceed `max_batch`
//! by that job's extra frames). Only while another batch of the model is running does it wait,
//! up to `max_delay_ms`, for more: a lone request runs at once, and under load the jobs that
//! queue while a batch runs make the next one. The batch runs once per member,
//! members (and the gate) concurrently on scoped threads (a batch of one image: one after the
//! other on the worker), and each job gets its own slice of every member's output back
//! through a oneshot channel.

use ort::session::Session;
use ort::value::TensorRef;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{debug, error};

use super::InferenceError;

/// Raw outputs for one job.
#[derive(Debug, Clone, PartialEq)]
pub struct RawOutputs {
    /// Per member (manifest order): `items x labels` raw output values (logits for sigmoid
    /// models), item-major.
    pub members: Vec<Vec<f32>>,
    /// Gate logit per item, when the model has a gate.
    pub gate: Option<Vec<f32>>,
    /// Images in the batch this job ran in (its own and other requests').
    pub batch_items: usize,
    /// Milliseconds the job waited before its batch started.
    pub queue_ms: f64,
    /// Milliseconds the batch took to run.
    pub run_ms: f64,
}

/// What the workers of one model need to know.
#[derive(Debug, Clone)]
pub(crate) struct RunSpec {
    /// Model id, for messages.
    pub id: String,
    /// Member input tensor name.
    pub input_name: String,
    /// Member output tensor name.
    pub output_name: String,
    /// Gate input tensor name (the gate's first input).
    pub gate_input: Option<String>,
    /// `[channels, height, width]`.
    pub chw: [usize; 3],
    /// Output values per item per member.
    pub labels: usize,
    /// Members accept only batch size 1 (fixed first dimension).
    pub members_batch1: bool,
    /// Gate accepts only batch size 1.
    pub gate_batch1: bool,
    /// Member file names, for messages.
    pub member_files: Vec<String>,
}

/// The sessions one worker owns.
pub(crate) struct SessionSet {
    pub members: Vec<Session>,
    pub gate: Option<Session>,
}

/// A request for the workers.
pub(crate) struct Job {
    pub input: Vec<f32>,
    pub items: usize,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<RawOutputs, InferenceError>>,
}

type BatchResult = (Vec<Vec<f32>>, Option<Vec<f32>>);

/// Runs `n` images (`input` holds `n x C x H x W` values) through every member and the gate.
/// A batch of one image runs its sessions one after the other on the worker: each takes a
/// fraction of a millisecond, about what handing it to another thread and waiting for it
/// costs, and the other cores stay free for the other workers and for preprocessing.
pub(crate) fn run_batch(
    spec: &RunSpec,
    sessions: &mut SessionSet,
    input: &[f32],
    n: usize,
) -> Result<BatchResult, InferenceError> {
    let SessionSet { members, gate } = sessions;
    if n == 1 {
        let outs = members
            .iter_mut()
            .enumerate()
            .map(|(i, m)| run_member(spec, i, m, input, n))
            .collect::<Result<Vec<_>, _>>()?;
        let gate = gate
            .as_mut()
            .map(|g| run_gate(spec, g, input, n))
            .transpose()?;
        return Ok((outs, gate));
    }
    std::thread::scope(|s| {
        let gate_handle = gate
            .as_mut()
            .map(|g| s.spawn(move || run_gate(spec, g, input, n)));
        let count = members.len();
        let mut handles = Vec::with_capacity(count);
        let last = count.saturating_sub(1);
        let mut last_result = None;
        for (i, m) in members.iter_mut().enumerate() {
            if i == last {
                // The last member runs on this thread.
                last_result = Some(run_member(spec, i, m, input, n));
            } else {
                handles.push(s.spawn(move || run_member(spec, i, m, input, n)));
            }
        }
        let mut outs = Vec::with_capacity(count);
        for h in handles {
            outs.push(h.join().unwrap_or_else(|_| {
                Err(InferenceError::Task(
                    "an ensemble member thread panicked".into(),
                ))
            })?);
        }
        if let Some(r) = last_result {
            outs.push(r?);
        }
        let gate_out = match gate_handle {
            Some(h) => Some(h.join().unwrap_or_else(|_| {
                Err(InferenceError::Task("the gate thread panicked".into()))
            })?),
            None => None,
        };
        Ok((outs, gate_out))
    })
}

/// Member `i` on `n` images.
fn run_member(
    spec: &RunSpec,
    i: usize,
    session: &mut Session,
    input: &[f32],
    n: usize,
) -> Result<Vec<f32>, InferenceError> {
    run_one(
        session,
        &spec.input_name,
        Some(&spec.output_name),
        input,
        n,
        spec.chw,
        spec.labels,
        spec.members_batch1,
    )
    .map_err(|reason| InferenceError::Run {
        model: format!("{} {}", spec.id, spec.member_files[i]),
        reason,
    })
}

/// The gate on `n` images.
fn run_gate(
    spec: &RunSpec,
    session: &mut Session,
    input: &[f32],
    n: usize,
) -> Result<Vec<f32>, InferenceError> {
    let name = spec.gate_input.as_deref().unwrap_or("image");
    run_one(session, name, None, input, n, spec.chw, 1, spec.gate_batch1).map_err(|reason| {
        InferenceError::Run {
            model: format!("{} gate", spec.id),
            reason,
        }
    })
}

/// One session, `n` images; returns `n x per_item` values.
#[allow(clippy::too_many_arguments)]
fn run_one(
    session: &mut Session,
    input_name: &str,
    output_name: Option<&str>,
    input: &[f32],
    n: usize,
    [c, h, w]: [usize; 3],
    per_item: usize,
    batch1: bool,
) -> Result<Vec<f32>, String> {
    let plane = c * h * w;
    let chunks: Vec<(usize, usize)> = if batch1 {
        (0..n).map(|i| (i, 1)).collect()
    } else {
        vec![(0, n)]
    };
    let mut out = Vec::with_capacity(n * per_item);
    for (start, count) in chunks {
        let data = &input[start * plane..(start + count) * plane];
        let tensor =
            TensorRef::from_array_view(([count, c, h, w], data)).map_err(|e| e.to_string())?;
        let outputs = session
            .run(ort::inputs![input_name => tensor])
            .map_err(|e| e.to_string())?;
        let value = match output_name {
            Some(name) => outputs
                .get(name)
                .ok_or_else(|| format!("the model has no output named `{name}`"))?,
            None => {
                let first = outputs
                    .keys()
                    .next()
                    .ok_or_else(|| "the model has no outputs".to_owned())?;
                outputs
                    .get(first)
                    .ok_or_else(|| "the model has no outputs".to_owned())?
            }
        };
        let (_, values) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("output is not an f32 tensor: {e}"))?;
        if values.len() != count * per_item {
            return Err(format!(
                "expected {} output values ({count} images x {per_item}), got {}",
                count * per_item,
                values.len()
            ));
        }
        out.extend_from_slice(values);
    }
    Ok(out)
}

/// Worker loop: batch jobs from `rx` and run them until the channel closes.
/// `running` counts the model's batches being run, shared by its workers.
pub(crate) fn worker(
    rx: Arc<Mutex<Receiver<Job>>>,
    mut sessions: SessionSet,
    spec: Arc<RunSpec>,
    max_batch: usize,
    max_delay: Duration,
    running: Arc<AtomicUsize>,
) {
    loop {
        let jobs = {
            let rx = match rx.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let Ok(first) = rx.recv() else {
                debug!(model = %spec.id, "inference worker stopping");
                return;
            };
            let mut items = first.items;
            let mut jobs = vec![first];
            while items < max_batch {
                let Ok(j) = rx.try_recv() else { break };
                items += j.items;
                jobs.push(j);
            }
            let deadline = Instant::now() + max_delay;
            while items < max_batch && running.load(Ordering::Acquire) > 0 {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(j) => {
                        items += j.items;
                        jobs.push(j);
                    }
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            jobs
        };
        // Requests whose caller went away are dropped before running.
        let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if jobs.is_empty() {
            continue;
        }
        let n: usize = jobs.iter().map(|j| j.items).sum();
        running.fetch_add(1, Ordering::AcqRel);
        let started = Instant::now();
        let input: Vec<f32> = if jobs.len() == 1 {
            Vec::new()
        } else {
            let mut v = Vec::with_capacity(jobs.iter().map(|j| j.input.len()).sum());
            for j in &jobs {
                v.extend_from_slice(&j.input);
            }
            v
        };
        let data: &[f32] = if jobs.len() == 1 {
            &jobs[0].input
        } else {
            &input
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_batch(&spec, &mut sessions, data, n)
        }))
        .unwrap_or_else(|_| Err(InferenceError::Task("inference batch panicked".into())));
        running.fetch_sub(1, Ordering::AcqRel);
        let run_ms = started.elapsed().as_secs_f64() * 1000.0;
        debug!(model = %spec.id, batch = n, jobs = jobs.len(), run_ms, "batch done");
        match result {
            Ok((members, gate)) => {
                let mut offset = 0;
                for j in jobs {
                    let range = offset..offset + j.items;
                    offset += j.items;
                    let l = spec.labels;
                    let out = RawOutputs {
                        members: members
                            .iter()
                            .map(|m| m[range.start * l..range.end * l].to_vec())
                            .collect(),
                        gate: gate.as_ref().map(|g| g[range.clone()].to_vec()),
                        batch_items: n,
                        queue_ms: started.duration_since(j.enqueued).as_secs_f64() * 1000.0,
                        run_ms,
                    };
                    let _ = j.reply.send(Ok(out));
                }
            }
            Err(e) => {
                error!(model = %spec.id, error = %e, batch = n, "inference batch failed");
                let msg = e.to_string();
                for j in jobs {
                    let _ = j.reply.send(Err(InferenceError::Run {
                        model: spec.id.clone(),
                        reason: msg.clone(),
                    }));
                }
            }
        }
    }
}

//! Which models run on a study: the first matching `[[pipeline.routes]]` entry, or without
//! routes the default set (one classification model, every segmentation and landmark model).

use std::sync::Arc;

use super::settings::{PipelineSettings, RouteFacts};
use super::PipelineError;
use crate::inference::manifest::{TASK_CLASSIFICATION, TASK_LANDMARKS, TASK_SEGMENTATION};
use crate::inference::{Engine, InferenceError, Manifest};
use crate::store::index::SourceInstance;

/// The models a job runs, at most one per task.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The route that chose them (`None`: the default set or the job's own model).
    pub route: Option<String>,
    pub classifier: Option<Arc<Manifest>>,
    pub segmenter: Option<Arc<Manifest>>,
    pub landmarks: Option<Arc<Manifest>>,
}

impl Plan {
    /// The models in output order: classification, segmentation, landmarks.
    pub fn models(&self) -> Vec<&Arc<Manifest>> {
        [&self.classifier, &self.segmenter, &self.landmarks]
            .into_iter()
            .flatten()
            .collect()
    }

    fn put(&mut self, m: Arc<Manifest>) -> Result<(), String> {
        let slot = match m.task.as_str() {
            TASK_CLASSIFICATION => &mut self.classifier,
            TASK_SEGMENTATION => &mut self.segmenter,
            TASK_LANDMARKS => &mut self.landmarks,
            other => return Err(format!("model '{}' has task {other}", m.id)),
        };
        if let Some(old) = slot {
            return Err(format!(
                "models '{}' and '{}' have the same task ({}); a route runs one model per task",
                old.id, m.id, m.task
            ));
        }
        *slot = Some(m);
        Ok(())
    }
}

/// The plan for a study whose instances are `candidates` (the first one is matched against
/// the routes); `job_model` is a model the job itself names (a reprocess with a model).
pub fn plan(
    engine: &Engine,
    settings: &PipelineSettings,
    job_model: Option<&str>,
    candidates: &[SourceInstance],
) -> Result<Plan, PipelineError> {
    let unknown = |e: InferenceError| match e {
        InferenceError::UnknownModel(m) => PipelineError::UnknownModel(m),
        other => PipelineError::Inference(other),
    };
    let mut plan = Plan::default();
    if let Some(id) = job_model {
        let m = engine.manifest_of(id).map_err(unknown)?;
        let own_task = m.task.clone();
        plan.put(m).map_err(PipelineError::UnusableModel)?;
        // The lung segmentation stays: it is the gate of the other models.
        if own_task != TASK_SEGMENTATION {
            if let Some(seg) = engine.segmentation_models().first() {
                plan.put(engine.manifest_of(&seg.id).map_err(unknown)?)
                    .map_err(PipelineError::UnusableModel)?;
            }
        }
        return Ok(plan);
    }
    if settings.routes.is_empty() {
        if let Ok(m) = engine.manifest(settings.model.as_deref()) {
            plan.put(m).map_err(PipelineError::UnusableModel)?;
        } else if let Some(id) = &settings.model {
            return Err(PipelineError::UnknownModel(id.clone()));
        }
        for info in engine
            .segmentation_models()
            .into_iter()
            .take(1)
            .chain(engine.landmark_models().into_iter().take(1))
        {
            plan.put(engine.manifest_of(&info.id).map_err(unknown)?)
                .map_err(PipelineError::UnusableModel)?;
        }
        if plan.models().is_empty() {
            return Err(PipelineError::UnknownModel("(no model installed)".into()));
        }
        return Ok(plan);
    }
    let first = candidates.first();
    let facts = RouteFacts {
        modality: first.and_then(|c| c.modality.as_deref()),
        body_part: first.and_then(|c| c.body_part.as_deref()),
        view_position: first.and_then(|c| c.view_position.as_deref()),
        sop_class_uid: first.map_or("", |c| c.sop_class_uid.as_str()),
        calling_ae: first.map(|c| c.calling_ae.as_str()),
    };
    let Some(route) = settings.routes.iter().find(|r| r.matches(&facts)) else {
        return Err(PipelineError::NoRoute(format!(
            "no pipeline route matches the study (modality {}, body part {}, view {}, calling AE {})",
            facts.modality.unwrap_or("(none)"),
            facts.body_part.unwrap_or("(none)"),
            facts.view_position.unwrap_or("(none)"),
            facts.calling_ae.unwrap_or("(none)")
        )));
    };
    plan.route = Some(route.name.clone());
    for id in &route.models {
        plan.put(engine.manifest_of(id).map_err(unknown)?)
            .map_err(PipelineError::UnusableModel)?;
    }
    Ok(plan)
}

/// Checks the routes against the installed models (at start).
pub fn check_routes(engine: &Engine, settings: &PipelineSettings) -> Result<(), String> {
    for (i, route) in settings.routes.iter().enumerate() {
        let mut plan = Plan::default();
        for id in &route.models {
            let m = engine
                .manifest_of(id)
                .map_err(|_| format!("pipeline.routes[{i}].models: '{id}' is not installed"))?;
            plan.put(m)
                .map_err(|e| format!("pipeline.routes[{i}].models: {e}"))?;
        }
    }
    Ok(())
}

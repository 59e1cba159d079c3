use serde::{Deserialize, Serialize};

/// `[pipeline]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Run the pipeline worker on this node (a receive-only node sets `false`).
    pub enabled: bool,
    /// Jobs run at once by this node.
    pub workers: usize,
    /// Seconds a claimed job stays ours without renewal; a crashed worker's job is taken up
    /// again after this.
    pub lease_secs: u64,
    /// Attempts before a job fails for good.
    pub max_attempts: u32,
    /// First retry delay in milliseconds; doubles with each attempt.
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds.
    pub retry_max_ms: u64,
    /// How often idle workers look for jobs queued by other nodes, in milliseconds.
    pub poll_ms: u64,
    /// Without `routes`: the classification model run on completed studies (unset: the
    /// first installed one by id); every installed segmentation and landmark model runs too.
    pub model: Option<String>,
    /// Which models run on which studies. The first route whose rules match the study's
    /// first instance names the models; when none matches, the study's job fails for good
    /// with the reason (`inference.failed`).
    /// Empty: the default set above.
    pub routes: Vec<Route>,
    /// Images analysed per study at most (the rest are reported as skipped).
    pub max_images_per_study: usize,
}

/// `[[pipeline.routes]]`: header rules on a study's instances and the models to run. Values
/// compare case-insensitively; an empty list accepts anything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Route {
    /// Shown in logs and the result.
    pub name: String,
    /// Modality (0008,0060).
    pub modalities: Vec<String>,
    /// Body Part Examined (0018,0015); `""` accepts a missing one.
    pub body_parts: Vec<String>,
    /// View Position (0018,5101); `""` accepts a missing one.
    pub view_positions: Vec<String>,
    /// SOP Class UID.
    pub sop_classes: Vec<String>,
    /// Calling AE title of the association that sent the instance (DICOMweb: `""`).
    pub calling_aes: Vec<String>,
    /// Model ids, in the order their outputs are listed.
    pub models: Vec<String>,
}

/// What a route is matched against: one stored instance's header facts.
#[derive(Debug, Clone, Default)]
pub struct RouteFacts<'a> {
    pub modality: Option<&'a str>,
    pub body_part: Option<&'a str>,
    pub view_position: Option<&'a str>,
    pub sop_class_uid: &'a str,
    pub calling_ae: Option<&'a str>,
}

impl Route {
    /// True when every non-empty rule accepts `facts`.
    pub fn matches(&self, facts: &RouteFacts<'_>) -> bool {
        let ok = |list: &[String], value: Option<&str>| {
            let v = value.unwrap_or("").trim();
            list.is_empty() || list.iter().any(|a| a.trim().eq_ignore_ascii_case(v))
        };
        ok(&self.modalities, facts.modality)
            && ok(&self.body_parts, facts.body_part)
            && ok(&self.view_positions, facts.view_position)
            && ok(&self.sop_classes, Some(facts.sop_class_uid))
            && ok(&self.calling_aes, facts.calling_ae)
    }
}

impl PipelineSettings {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.workers == 0 || self.workers > 64 {
            return Err(("pipeline.workers", "must be 1..=64".into()));
        }
        if self.lease_secs == 0 {
            return Err(("pipeline.lease_secs", "must be at least 1".into()));
        }
        if self.max_attempts == 0 {
            return Err(("pipeline.max_attempts", "must be at least 1".into()));
        }
        if self.max_images_per_study == 0 {
            return Err(("pipeline.max_images_per_study", "must be at least 1".into()));
        }
        for r in &self.routes {
            if r.models.is_empty() {
                return Err((
                    "pipeline.routes",
                    format!("route '{}' names no models", r.name),
                ));
            }
        }
        Ok(())
    }
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: 2,
            lease_secs: 60,
            max_attempts: 5,
            retry_base_ms: 2000,
            retry_max_ms: 300_000,
            poll_ms: 1000,
            model: None,
            routes: Vec::new(),
            max_images_per_study: 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_matches_on_every_rule_given() {
        let route = Route {
            name: "chest".into(),
            modalities: vec!["CR".into(), "DX".into()],
            body_parts: vec!["CHEST".into(), "".into()],
            calling_aes: vec!["MODALITY1".into()],
            models: vec!["lung-seg".into()],
            ..Route::default()
        };
        let mut facts = RouteFacts {
            modality: Some("dx"),
            body_part: None,
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1",
            calling_ae: Some("MODALITY1 "),
            ..RouteFacts::default()
        };
        assert!(route.matches(&facts));
        facts.body_part = Some("HAND");
        assert!(!route.matches(&facts));
        facts.body_part = Some("CHEST");
        facts.calling_ae = Some("OTHER");
        assert!(!route.matches(&facts));
        facts.calling_ae = Some("MODALITY1");
        facts.modality = Some("CT");
        assert!(!route.matches(&facts));
    }

    #[test]
    fn a_route_without_models_is_refused() {
        let s = PipelineSettings {
            routes: vec![Route::default()],
            ..PipelineSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "pipeline.routes");
    }
}

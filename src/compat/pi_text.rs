//! Pi Health Triage's patient-facing texts, per locale and urgency. English and French; other
//! locales fall back to English (the output's `locale` says which was used).

use crate::domain::Urgency;

/// Locales with their own texts.
pub const LOCALES: [&str; 2] = ["en", "fr"];

/// The locale to answer in: the requested one if we have it (`fr-CA` → `fr`), else English.
pub fn pick(requested: Option<&str>) -> &'static str {
    let lang = requested
        .and_then(|l| l.split(['-', '_']).next())
        .map(|l| l.to_ascii_lowercase());
    LOCALES
        .into_iter()
        .find(|l| Some(*l) == lang.as_deref())
        .unwrap_or("en")
}

pub struct Texts {
    pub care: &'static str,
    pub referral: &'static str,
    pub warning_signs: [&'static str; 3],
    pub disclaimer: &'static str,
    pub present: &'static str,
    pub absent_title: &'static str,
    pub absent_summary: &'static str,
}

pub fn texts(locale: &str, urgency: Urgency) -> Texts {
    let fr = locale == "fr";
    let (care, referral) = match (fr, urgency) {
        (false, Urgency::Critical) => (
            "Keep the patient at rest and monitored; do not leave them alone. Arrange emergency transfer now.",
            "Emergency referral: send the patient to the nearest emergency department immediately with the image.",
        ),
        (false, Urgency::Urgent) => (
            "Keep the patient comfortable, check breathing and temperature, and arrange a clinical review today.",
            "Urgent referral: a clinician should review the patient and the image within 24 hours.",
        ),
        (false, Urgency::Standard) => (
            "Continue usual care and record the symptoms; repeat the assessment if they change.",
            "Routine referral: book a clinical review of the image at the next available appointment.",
        ),
        (false, Urgency::Low) => (
            "No finding needing action was seen; continue usual care and advise the patient to return if symptoms appear.",
            "No referral needed on the basis of this image alone.",
        ),
        (true, Urgency::Critical) => (
            "Garder le patient au repos et sous surveillance ; ne pas le laisser seul. Organiser un transfert d'urgence immédiatement.",
            "Orientation en urgence : adresser immédiatement le patient au service d'urgences le plus proche avec l'image.",
        ),
        (true, Urgency::Urgent) => (
            "Installer le patient confortablement, surveiller la respiration et la température, et organiser un examen clinique aujourd'hui.",
            "Orientation urgente : un clinicien doit examiner le patient et l'image dans les 24 heures.",
        ),
        (true, Urgency::Standard) => (
            "Poursuivre les soins habituels et noter les symptômes ; refaire l'évaluation s'ils évoluent.",
            "Orientation de routine : prévoir un examen clinique de l'image au prochain rendez-vous disponible.",
        ),
        (true, Urgency::Low) => (
            "Aucune anomalie nécessitant une action n'a été vue ; poursuivre les soins habituels et conseiller au patient de revenir si des symptômes apparaissent.",
            "Pas d'orientation nécessaire sur la base de cette seule image.",
        ),
    };
    if fr {
        Texts {
            care,
            referral,
            warning_signs: [
                "Difficulté à respirer ou respiration très rapide",
                "Douleur thoracique, lèvres ou visage bleutés",
                "Confusion, somnolence inhabituelle ou perte de connaissance",
            ],
            disclaimer: "Aide au triage uniquement, pas un diagnostic. Résultat produit par un algorithme de démonstration non validé cliniquement ; un professionnel de santé qualifié doit confirmer toute décision.",
            present: "détecté avec une probabilité de",
            absent_title: "Aucune anomalie détectée",
            absent_summary: "Aucun des onze signes recherchés n'a été détecté sur l'image.",
        }
    } else {
        Texts {
            care,
            referral,
            warning_signs: [
                "Difficulty breathing or very fast breathing",
                "Chest pain, or blue lips or face",
                "Confusion, unusual drowsiness or loss of consciousness",
            ],
            disclaimer: "Triage support only, not a diagnosis. Produced by a demonstration algorithm that is not clinically validated; a qualified health professional must confirm any decision.",
            present: "detected with probability",
            absent_title: "No finding detected",
            absent_summary: "None of the eleven findings the model looks for was detected on the image.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_choice() {
        assert_eq!(pick(Some("fr-CA")), "fr");
        assert_eq!(pick(Some("FR")), "fr");
        assert_eq!(pick(Some("de")), "en");
        assert_eq!(pick(None), "en");
    }

    #[test]
    fn every_locale_and_urgency_has_texts() {
        for l in LOCALES {
            for u in Urgency::ALL {
                let t = texts(l, u);
                assert!(!t.care.is_empty() && !t.referral.is_empty() && !t.disclaimer.is_empty());
            }
        }
        assert_ne!(
            texts("fr", Urgency::Low).care,
            texts("en", Urgency::Low).care
        );
    }
}

//! What a postcard is asked to be: mood, style and theme (seed 004's `create` body), the
//! user's free-text wishes, and which of their uploads the photo came from. Stored with the
//! task as `JobSpec::Postcard` (`tasks.job`), so the runner reads it back as it was asked.

use serde::{Deserialize, Serialize};

/// Longest mood, style or theme, in characters (after trimming).
pub const MAX_FIELD: usize = 100;
/// Longest free-text wish, in characters.
pub const MAX_EXTRA: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostcardSpec {
    pub mood: String,
    pub style: String,
    pub theme: String,
    #[serde(default)]
    pub extra: Option<String>,
    /// The upload the photo was copied from (the task's input is the copy).
    #[serde(default)]
    pub photo_id: Option<String>,
}

impl PostcardSpec {
    /// A spec of what the client sent, trimmed; a blank wish is none.
    pub fn new(mood: &str, style: &str, theme: &str, extra: Option<&str>, photo_id: Option<&str>) -> Self {
        Self {
            mood: mood.trim().to_owned(),
            style: style.trim().to_owned(),
            theme: theme.trim().to_owned(),
            extra: extra.map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned),
            photo_id: photo_id.map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned),
        }
    }

    /// Adds every problem of the fields to `errors`.
    pub fn check(&self, errors: &mut Vec<(&'static str, String)>) {
        for (field, value) in [("mood", &self.mood), ("style", &self.style), ("theme", &self.theme)] {
            let n = value.trim().chars().count();
            if n == 0 || n > MAX_FIELD {
                errors.push((field, format!("must be 1 to {MAX_FIELD} characters")));
            }
        }
        if self.extra.as_ref().is_some_and(|e| e.chars().count() > MAX_EXTRA) {
            errors.push(("extra", format!("must be at most {MAX_EXTRA} characters")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(s: &PostcardSpec) -> Vec<&'static str> {
        let mut errors = Vec::new();
        s.check(&mut errors);
        errors.into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn fields_are_trimmed_and_bounded() {
        let s = PostcardSpec::new("  开心 ", "赛博朋克", "生日", Some("   "), Some(""));
        assert_eq!((s.mood.as_str(), s.extra.as_deref(), s.photo_id.as_deref()), ("开心", None, None));
        assert!(problems(&s).is_empty());
        let s = PostcardSpec::new(" ", &"风".repeat(MAX_FIELD), &"x".repeat(MAX_FIELD + 1), Some(&"y".repeat(MAX_EXTRA + 1)), None);
        assert_eq!(problems(&s), ["mood", "theme", "extra"], "characters are counted, not bytes");
    }
}

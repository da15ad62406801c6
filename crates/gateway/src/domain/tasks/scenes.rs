//! Scenes (seed 001): named presets of task parameters (quality, scale, face restoration) with
//! a price and a cover image, shown by the mini-program as cards. `/api/tasks/create` with a
//! scene runs its parameters at its price (the kind's price when the scene names none).

use purrify_api::EnhanceParams;
use purrify_store::{Scene, SceneFields, StoreError};

use super::TaskService;
use super::manage::task_kind;
use crate::domain::credits::{MAX_AMOUNT, hundredths};
use crate::domain::{DomainError, DomainResult};

/// A scene as an admin sends it, before checks.
#[derive(Debug, Clone, Default)]
pub struct SceneInput {
    pub name: String,
    pub description: Option<String>,
    pub cover_url: Option<String>,
    pub kind: Option<String>,
    pub params: EnhanceParams,
    /// Credits as the client wrote them (`2.50`); `None`: the kind's price.
    pub price: Option<String>,
    pub sort_order: Option<i64>,
    pub active: Option<bool>,
}

/// Checks every field, naming each bad one.
pub fn check_scene(input: SceneInput) -> DomainResult<SceneFields> {
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 64 {
        errors.push(("name", "must be 1-64 characters".into()));
    }
    let description = input.description.unwrap_or_default().trim().to_string();
    if description.chars().count() > 500 {
        errors.push(("description", "must be at most 500 characters".into()));
    }
    let cover_url = input.cover_url.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
    if let Some(c) = &cover_url {
        let ok = c.len() <= 1024 && (c.starts_with('/') || url::Url::parse(c).is_ok_and(|u| matches!(u.scheme(), "http" | "https")));
        if !ok {
            errors.push(("cover_url", "must be an http(s) URL or a path of at most 1024 characters".into()));
        }
    }
    let kind = input.kind.unwrap_or_else(|| "enhance".into());
    if let Err(DomainError::Invalid { message, .. }) = task_kind(&kind) {
        errors.push(("task_type", message));
    }
    if let Err(m) = input.params.validate() {
        errors.push((if m.starts_with("scale") { "scale" } else { "tile_size" }, m));
    }
    let price = match input.price.as_deref().map(hundredths) {
        None => None,
        Some(Ok(p)) if (0..=MAX_AMOUNT).contains(&p) => Some(p),
        Some(Ok(_)) => {
            errors.push(("price", "must be between 0 and 10,000,000 credits".into()));
            None
        }
        Some(Err(m)) => {
            errors.push(("price", m));
            None
        }
    };
    if !errors.is_empty() {
        return Err(DomainError::Fields(errors));
    }
    Ok(SceneFields {
        name,
        description,
        cover_url,
        kind,
        params: input.params,
        price,
        sort_order: input.sort_order.unwrap_or(0),
        active: input.active.unwrap_or(true),
    })
}

fn no_scene(id: &str) -> DomainError {
    DomainError::NotFound(format!("no scene {id}"))
}

impl TaskService {
    /// Scenes by sort order; inactive ones too when `all` (admins).
    pub async fn scenes(&self, all: bool) -> DomainResult<Vec<Scene>> {
        Ok(self.inner.db.scenes(!all).await?)
    }

    /// One scene; an inactive one only when `all`.
    pub async fn scene(&self, id: &str, all: bool) -> DomainResult<Scene> {
        match self.inner.db.scene(id).await? {
            Some(s) if s.active || all => Ok(s),
            _ => Err(no_scene(id)),
        }
    }

    pub async fn create_scene(&self, input: SceneInput) -> DomainResult<Scene> {
        let fields = check_scene(input)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        match self.inner.db.insert_scene(&id, &fields).await {
            Ok(s) => Ok(s),
            Err(StoreError::Duplicate(m)) => Err(DomainError::Conflict(m)),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn update_scene(&self, id: &str, input: SceneInput) -> DomainResult<Scene> {
        let fields = check_scene(input)?;
        self.inner.db.update_scene(id, &fields).await?.ok_or_else(|| no_scene(id))
    }

    pub async fn delete_scene(&self, id: &str) -> DomainResult<()> {
        if self.inner.db.delete_scene(id).await? { Ok(()) } else { Err(no_scene(id)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_named() {
        let bad = SceneInput {
            name: " ".into(),
            cover_url: Some("javascript:alert(1)".into()),
            kind: Some("video".into()),
            params: EnhanceParams { scale: 3, ..EnhanceParams::default() },
            price: Some("-1".into()),
            ..SceneInput::default()
        };
        let Err(DomainError::Fields(f)) = check_scene(bad) else { panic!("refused") };
        let names: Vec<&str> = f.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["name", "cover_url", "task_type", "scale", "price"]);
        let ok =
            check_scene(SceneInput { name: "Portrait".into(), cover_url: Some("/static/p.jpg".into()), ..SceneInput::default() }).unwrap();
        assert_eq!((ok.kind.as_str(), ok.active, ok.sort_order), ("enhance", true, 0));
    }
}

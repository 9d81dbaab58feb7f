//! The object a rollout command names, as kubectl takes it: `deployment/web`, `deploy/web`,
//! `deployments web`, or `web` alone (a Deployment).
//!
//! Only Deployments roll out today; Argo's `Rollout` joins [`RolloutKind`] when it exists (its
//! words, its API path and its kubectl name are the only places that change).

use crate::manifest::Kind;

/// The kinds that have rollouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutKind {
    Deployment,
    /// Argo's `Rollout` (canary, blue/green).
    Rollout,
}

impl RolloutKind {
    /// The kind a word names (`deployment`, `deployments`, `deploy`), case-insensitive.
    fn parse(word: &str) -> Option<RolloutKind> {
        match Kind::parse(word) {
            Some(Kind::Deployment) => Some(RolloutKind::Deployment),
            Some(Kind::Rollout) => Some(RolloutKind::Rollout),
            _ => None,
        }
    }

    /// The kind of the stored object.
    pub fn kind(self) -> Kind {
        match self {
            RolloutKind::Deployment => Kind::Deployment,
            RolloutKind::Rollout => Kind::Rollout,
        }
    }

    /// The name kubectl prints: `deployment.apps/web`.
    pub fn kubectl_name(self, name: &str) -> String {
        match self {
            RolloutKind::Deployment => format!("deployment.apps/{name}"),
            RolloutKind::Rollout => format!("rollout.argoproj.io/{name}"),
        }
    }

    /// How kubectl says it in messages: `deployment`.
    pub fn noun(self) -> &'static str {
        match self {
            RolloutKind::Deployment => "deployment",
            RolloutKind::Rollout => "rollout",
        }
    }
}

/// A rollout command's object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRef {
    pub kind: RolloutKind,
    pub name: String,
}

/// What is wrong with the words naming the object.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("name the object: `deployment/NAME` (or `deployment NAME`, or `NAME`)")]
    Missing,
    #[error("`{kind}` needs a name: `{kind}/NAME`")]
    NoName { kind: String },
    #[error("{plural} have no rollouts: only deployments and rollouts do (`deployment/NAME`, `rollout/NAME`)")]
    NoRollouts { plural: &'static str },
    #[error("the server doesn't have a resource type \"{kind}\" (use `deployment/NAME`)")]
    UnknownKind { kind: String },
}

impl ResourceRef {
    pub fn new(kind: RolloutKind, name: impl Into<String>) -> ResourceRef {
        ResourceRef { kind, name: name.into() }
    }

    /// The object named by the first words, and the words after it. `TYPE/NAME` is one word;
    /// `TYPE NAME` is two when the second is not a `KEY=VALUE` argument (`set image`'s); any
    /// other single word is the name of a Deployment.
    pub fn parse(words: &[String]) -> Result<(ResourceRef, &[String]), ResourceError> {
        let Some(first) = words.first() else { return Err(ResourceError::Missing) };
        if let Some((kind, name)) = first.split_once('/') {
            let kind = Self::kind_of(kind)?;
            if name.is_empty() {
                return Err(ResourceError::NoName { kind: first.trim_end_matches('/').to_string() });
            }
            return Ok((ResourceRef::new(kind, name), &words[1..]));
        }
        let second = words.get(1).filter(|w| !w.contains('=') && !w.contains('/'));
        if let Some(name) = second
            && Kind::parse(first).is_some()
        {
            return Ok((ResourceRef::new(Self::kind_of(first)?, name.as_str()), &words[2..]));
        }
        if Kind::parse(first).is_some() {
            // `rollout status deployment`: a kind with no name.
            return Err(ResourceError::NoName { kind: first.clone() });
        }
        Ok((ResourceRef::new(RolloutKind::Deployment, first.as_str()), &words[1..]))
    }

    /// Like [`ResourceRef::parse_only`], but a bare `NAME` is of kind `default` (`rollout
    /// promote NAME` names a Rollout, as Argo's plugin takes it).
    pub fn parse_only_or(words: &[String], default: RolloutKind) -> anyhow::Result<ResourceRef> {
        let bare = words.len() == 1 && !words[0].contains('/') && Kind::parse(&words[0]).is_none();
        let mut r = Self::parse_only(words)?;
        if bare {
            r.kind = default;
        }
        Ok(r)
    }

    /// Like [`ResourceRef::parse`], with nothing allowed after the object.
    pub fn parse_only(words: &[String]) -> anyhow::Result<ResourceRef> {
        let (r, rest) = Self::parse(words)?;
        if let Some(extra) = rest.first() {
            anyhow::bail!("unexpected argument `{extra}` after {}", r.kubectl_name());
        }
        Ok(r)
    }

    fn kind_of(word: &str) -> Result<RolloutKind, ResourceError> {
        if let Some(k) = RolloutKind::parse(word) {
            return Ok(k);
        }
        match Kind::parse(word) {
            Some(other) => Err(ResourceError::NoRollouts { plural: other.plural() }),
            None => Err(ResourceError::UnknownKind { kind: word.to_string() }),
        }
    }

    /// `deployment.apps/web`.
    pub fn kubectl_name(&self) -> String {
        self.kind.kubectl_name(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn parse(s: &str) -> Result<(ResourceRef, Vec<String>), ResourceError> {
        let w = words(s);
        ResourceRef::parse(&w).map(|(r, rest)| (r, rest.to_vec()))
    }

    #[test]
    fn every_form_of_a_deployment() {
        let web = ResourceRef::new(RolloutKind::Deployment, "web");
        for s in
            ["deployment/web", "deploy/web", "deployments/web", "Deployment/web", "deployment web", "deploy web", "web"]
        {
            assert_eq!(parse(s), Ok((web.clone(), vec![])), "{s}");
        }
        assert_eq!(web.kubectl_name(), "deployment.apps/web");
    }

    #[test]
    fn set_image_arguments_follow_the_object() {
        assert_eq!(parse("deployment/web web=web:2 side=s:1").unwrap().1, words("web=web:2 side=s:1"));
        assert_eq!(
            parse("deployment web web=web:2").unwrap(),
            (ResourceRef::new(RolloutKind::Deployment, "web"), words("web=web:2"))
        );
        assert_eq!(parse("web web=web:2").unwrap().0.name, "web");
    }

    #[test]
    fn what_is_not_a_deployment_is_named() {
        assert_eq!(parse(""), Err(ResourceError::Missing));
        assert_eq!(parse("deployment"), Err(ResourceError::NoName { kind: "deployment".into() }));
        assert_eq!(parse("deployment/"), Err(ResourceError::NoName { kind: "deployment".into() }));
        assert_eq!(parse("svc/web"), Err(ResourceError::NoRollouts { plural: "services" }));
        assert_eq!(parse("rollout/web"), Ok((ResourceRef::new(RolloutKind::Rollout, "web"), vec![])));
        assert_eq!(parse("jobs/web"), Err(ResourceError::NoRollouts { plural: "jobs" }));
        assert_eq!(parse("statefulset/web"), Err(ResourceError::UnknownKind { kind: "statefulset".into() }));
        assert_eq!(
            ResourceError::UnknownKind { kind: "statefulset".into() }.to_string(),
            "the server doesn't have a resource type \"statefulset\" (use `deployment/NAME`)"
        );
        assert!(ResourceRef::parse_only(&words("deployment/web extra")).is_err());
    }
}

//! Routing: deployments sharing a public model name form a group. For each request the
//! router orders the group's deployments by the group's strategy (weighted, least-busy,
//! lowest-latency, lowest-cost), skips those cooling down or over their rpm / tpm caps,
//! retries failures with backoff and jitter (honouring `Retry-After`) on the next
//! deployment, and when the whole group fails falls back to the groups configured for
//! that kind of failure. All of it happens before any byte reaches the client.

mod health;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

pub use health::{Health, HealthSnapshot, InFlight};

use crate::config::{
    Config, FallbackTrigger, ProviderKind, RouteRuleConfig, RouterConfig, Strategy,
};
use crate::meter::PriceBook;
use crate::providers::{Provider, UpstreamError};

pub struct Deployment {
    pub id: String,
    pub model: String,
    pub upstream_model: String,
    pub kind: ProviderKind,
    pub provider: Provider,
    pub weight: u32,
    pub health: Health,
    /// Input + output price per million tokens, for lowest-cost (micro-dollars).
    pub unit_price: Option<i64>,
}

/// The triggers of one fallback rule and the groups it sends to.
type Fallback = (Vec<FallbackTrigger>, Vec<String>);

struct Group {
    strategy: Strategy,
    deployments: Vec<Arc<Deployment>>,
}

pub struct ModelGroups {
    groups: BTreeMap<String, Group>,
    rules: Vec<RouteRuleConfig>,
    fallbacks: HashMap<String, Vec<Fallback>>,
    policy: RouterConfig,
}

/// What route rules look at.
#[derive(Debug, Clone, Default)]
pub struct RouteContext {
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub tags: Vec<String>,
    /// Estimated prompt size.
    pub prompt_tokens: u64,
}

/// A served call: what answered, after how many attempts, and the deployment's busy mark
/// (held until the response, or the stream, ends).
pub struct Served<T> {
    pub value: T,
    pub deployment: Arc<Deployment>,
    pub attempts: u32,
    pub busy: InFlight,
}

/// Why every attempt failed, how many there were, and the deployment tried last.
pub struct Failed {
    pub error: UpstreamError,
    pub attempts: u32,
    pub deployment: Option<Arc<Deployment>>,
}

impl ModelGroups {
    pub fn build(
        config: &Config,
        http: &reqwest::Client,
        prices: &PriceBook,
    ) -> reqwest::Result<ModelGroups> {
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for d in &config.deployments {
            // A deployment with its own connect timeout gets its own pool; all others share one.
            let own;
            let http = match d.connect_timeout_ms {
                Some(ms) => {
                    own = crate::providers::http::client(Duration::from_millis(ms))?;
                    &own
                }
                None => http,
            };
            let upstream_model = d.upstream_model.clone().unwrap_or_else(|| d.model.clone());
            let unit_price = prices
                .lookup(&d.model, &upstream_model)
                .map(|p| p.input + p.output);
            let dep = Deployment {
                id: d.id.clone().unwrap_or_else(|| d.model.clone()),
                model: d.model.clone(),
                upstream_model,
                kind: d.provider,
                provider: Provider::from_config(d, http, config.server.max_upstream_body_bytes),
                weight: d.weight,
                health: Health::new(d.rpm, d.tpm),
                unit_price,
            };
            let strategy = config
                .model_groups
                .iter()
                .find(|g| g.model == d.model)
                .map_or(config.router.strategy, |g| g.strategy);
            groups
                .entry(d.model.clone())
                .or_insert_with(|| Group {
                    strategy,
                    deployments: Vec::new(),
                })
                .deployments
                .push(Arc::new(dep));
        }
        let mut fallbacks: HashMap<String, Vec<Fallback>> = HashMap::new();
        for f in &config.fallbacks {
            fallbacks
                .entry(f.model.clone())
                .or_default()
                .push((f.on.clone(), f.to.clone()));
        }
        Ok(ModelGroups {
            groups,
            fallbacks,
            rules: config.route_rules.clone(),
            policy: config.router.clone(),
        })
    }

    /// The model a request is sent to: the first route rule that matches, else the one asked for.
    pub fn rewrite<'a>(&'a self, model: &'a str, ctx: &RouteContext) -> &'a str {
        self.rules
            .iter()
            .find(|r| {
                r.model == model
                    && r.max_prompt_tokens
                        .is_none_or(|max| ctx.prompt_tokens <= max)
                    && r.min_prompt_tokens
                        .is_none_or(|min| ctx.prompt_tokens >= min)
                    && (r.keys.is_empty()
                        || ctx.key_id.as_ref().is_some_and(|k| r.keys.contains(k)))
                    && (r.teams.is_empty()
                        || ctx.team_id.as_ref().is_some_and(|t| r.teams.contains(t)))
                    && (r.tags.is_empty() || ctx.tags.iter().any(|t| r.tags.contains(t)))
            })
            .map_or(model, |r| r.to.as_str())
    }

    pub fn contains(&self, model: &str) -> bool {
        self.groups.contains_key(model)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&String, &Vec<Arc<Deployment>>)> {
        self.groups.iter().map(|(k, g)| (k, &g.deployments))
    }

    /// A group's deployments as configured (empty for an unknown name).
    pub fn deployments(&self, model: &str) -> &[Arc<Deployment>] {
        self.groups.get(model).map_or(&[], |g| &g.deployments)
    }

    /// Every group this group falls back to, in order, whatever the trigger.
    pub fn fallback_targets(&self, model: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, to) in self.fallbacks.get(model).into_iter().flatten() {
            for t in to {
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
        }
        out
    }

    pub fn strategy(&self, model: &str) -> Option<Strategy> {
        self.groups.get(model).map(|g| g.strategy)
    }

    /// The group's deployments in the order to try them now: available ones by strategy,
    /// then (as a last resort) those cooling down or over their caps, soonest first.
    pub fn plan(&self, model: &str) -> Vec<Arc<Deployment>> {
        let Some(group) = self.groups.get(model) else {
            return Vec::new();
        };
        let now = Instant::now();
        let (mut ready, mut resting): (Vec<_>, Vec<_>) = group
            .deployments
            .iter()
            .cloned()
            .partition(|d| d.health.available(now));
        order(&mut ready, group.strategy);
        resting.sort_by_key(|d| d.health.cooldown_remaining(now));
        ready.extend(resting);
        ready
    }

    /// Runs `call` on the group's deployments until one answers, retrying on retryable
    /// failures, then on the configured fallback groups.
    pub async fn serve<T, F, Fut>(&self, model: &str, mut call: F) -> Result<Served<T>, Failed>
    where
        F: FnMut(Arc<Deployment>) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut attempts = 0;
        let (mut last, mut last_dep) = match self.serve_group(model, &mut call, &mut attempts).await
        {
            Ok(served) => return Ok(served),
            Err(e) => e,
        };
        let trigger = trigger_of(&last);
        let targets: Vec<String> = self
            .fallbacks
            .get(model)
            .into_iter()
            .flatten()
            .filter(|(on, _)| trigger.is_some_and(|t| on.contains(&t)))
            .flat_map(|(_, to)| to.iter().cloned())
            .collect();
        for target in targets {
            tracing::info!(from = %model, to = %target, "falling back");
            match self.serve_group(&target, &mut call, &mut attempts).await {
                Ok(served) => return Ok(served),
                Err((e, d)) => {
                    last = e;
                    last_dep = d.or(last_dep);
                }
            }
        }
        Err(Failed {
            error: last,
            attempts,
            deployment: last_dep,
        })
    }

    async fn serve_group<T, F, Fut>(
        &self,
        model: &str,
        call: &mut F,
        attempts: &mut u32,
    ) -> Result<Served<T>, (UpstreamError, Option<Arc<Deployment>>)>
    where
        F: FnMut(Arc<Deployment>) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let plan = self.plan(model);
        if plan.is_empty() {
            return Err((
                UpstreamError::Protocol(format!("no deployment serves {model}")),
                None,
            ));
        }
        let tries = self.policy.retries as usize + 1;
        let mut last = None;
        let mut last_dep = None;
        for i in 0..tries {
            let dep = plan[i % plan.len()].clone();
            last_dep = Some(dep.clone());
            if i > 0 {
                let wait = self.backoff(i as u32, last.as_ref());
                tokio::time::sleep(wait).await;
            }
            *attempts += 1;
            let busy = dep.health.begin();
            let started = Instant::now();
            match call(dep.clone()).await {
                Ok(value) => {
                    dep.health.succeeded(started.elapsed());
                    return Ok(Served {
                        value,
                        deployment: dep,
                        attempts: *attempts,
                        busy,
                    });
                }
                Err(e) => {
                    let retry = retryable(&e);
                    if counts_against_health(&e) {
                        let cooled = dep.health.failed(
                            self.policy.cooldown_failures,
                            Duration::from_millis(self.policy.cooldown_ms),
                        );
                        if cooled {
                            tracing::warn!(deployment = %dep.id, "deployment cooling down after repeated failures");
                        }
                    }
                    tracing::warn!(deployment = %dep.id, attempt = *attempts, error = %e, "upstream attempt failed");
                    last = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err((
            last.unwrap_or_else(|| UpstreamError::Protocol("no attempt made".into())),
            last_dep,
        ))
    }

    /// Exponential backoff with full jitter; an upstream's `Retry-After` is honoured (up
    /// to the cap).
    fn backoff(&self, retry: u32, last: Option<&UpstreamError>) -> Duration {
        let cap = self.policy.max_backoff_ms;
        if let Some(UpstreamError::Status {
            retry_after: Some(s),
            ..
        }) = last
        {
            return Duration::from_millis(s.saturating_mul(1000).min(cap));
        }
        let ceiling = self
            .policy
            .backoff_ms
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(cap);
        Duration::from_millis(rand::thread_rng().gen_range(ceiling / 2..=ceiling.max(1)))
    }
}

fn order(ready: &mut Vec<Arc<Deployment>>, strategy: Strategy) {
    match strategy {
        Strategy::Weighted => weighted_shuffle(ready),
        Strategy::LeastBusy => {
            weighted_shuffle(ready);
            ready.sort_by_key(|d| d.health.in_flight());
        }
        Strategy::LowestLatency => {
            weighted_shuffle(ready);
            ready.sort_by_key(|d| d.health.latency_us());
        }
        Strategy::LowestCost => {
            weighted_shuffle(ready);
            ready.sort_by_key(|d| d.unit_price.unwrap_or(i64::MAX));
        }
    }
}

/// Orders by weighted random draws without replacement (ties broken by weight).
fn weighted_shuffle(v: &mut Vec<Arc<Deployment>>) {
    if v.len() < 2 {
        return;
    }
    let mut rng = rand::thread_rng();
    let mut out = Vec::with_capacity(v.len());
    while !v.is_empty() {
        let total: u64 = v.iter().map(|d| u64::from(d.weight)).sum();
        let mut ticket = rng.gen_range(0..total.max(1));
        let mut idx = v.len() - 1;
        for (i, d) in v.iter().enumerate() {
            let w = u64::from(d.weight);
            if ticket < w {
                idx = i;
                break;
            }
            ticket -= w;
        }
        out.push(v.remove(idx));
    }
    *v = out;
}

/// Failures worth another attempt: the upstream (not the request) is at fault.
pub fn retryable(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Connect(_) | UpstreamError::Timeout(_) | UpstreamError::Protocol(_) => true,
        UpstreamError::Status { status, .. } => matches!(status, 408 | 409 | 429) || *status >= 500,
        UpstreamError::Unsupported { .. } | UpstreamError::ContentPolicy(_) => false,
    }
}

/// Failures that say the deployment is unwell (a refused request says nothing of it).
fn counts_against_health(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Status { status, .. } => {
            *status == 401 || *status == 403 || *status == 429 || *status >= 500
        }
        _ => retryable(e),
    }
}

/// Which fallback trigger a final failure pulls.
pub fn trigger_of(e: &UpstreamError) -> Option<FallbackTrigger> {
    match e {
        UpstreamError::Timeout(_) => Some(FallbackTrigger::Timeout),
        UpstreamError::ContentPolicy(_) => Some(FallbackTrigger::ContentPolicy),
        UpstreamError::Status {
            status: 400 | 413 | 422,
            message,
            code,
            ..
        } => {
            let text = format!("{} {}", code.as_deref().unwrap_or(""), message).to_lowercase();
            if text.contains("context_length")
                || text.contains("context window")
                || text.contains("maximum context")
                || text.contains("too many tokens")
                || text.contains("prompt is too long")
            {
                Some(FallbackTrigger::ContextWindow)
            } else if text.contains("content_policy")
                || text.contains("content_filter")
                || text.contains("safety")
            {
                Some(FallbackTrigger::ContentPolicy)
            } else {
                None
            }
        }
        UpstreamError::Unsupported { .. } => None,
        _ => Some(FallbackTrigger::Error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(text: &str) -> ModelGroups {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            format!("[server]\nmaster_key=\"0123456789abcdef0\"\n{text}"),
        )
        .unwrap();
        let cfg = Config::load(Some(&p), None, &crate::config::ProcessEnv).unwrap();
        ModelGroups::build(
            &cfg,
            &reqwest::Client::new(),
            &PriceBook::from_config(&cfg.prices),
        )
        .unwrap()
    }

    #[test]
    fn route_rules_send_small_or_tagged_requests_elsewhere() {
        let g = groups(
            "[[deployments]]\nmodel=\"big\"\nprovider=\"mock\"\n[[deployments]]\nmodel=\"small\"\nprovider=\"mock\"\n\
             [[route_rules]]\nmodel=\"big\"\nto=\"small\"\nmax_prompt_tokens=100\n\
             [[route_rules]]\nmodel=\"big\"\nto=\"small\"\ntags=[\"batch\"]\nkeys=[\"k1\"]\n",
        );
        let ctx = |tokens, tags: &[&str], key: Option<&str>| RouteContext {
            key_id: key.map(str::to_owned),
            team_id: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            prompt_tokens: tokens,
        };
        assert_eq!(g.rewrite("big", &ctx(50, &[], None)), "small");
        assert_eq!(g.rewrite("big", &ctx(500, &[], None)), "big");
        assert_eq!(g.rewrite("big", &ctx(500, &["batch"], Some("k1"))), "small");
        assert_eq!(
            g.rewrite("big", &ctx(500, &["batch"], Some("k2"))),
            "big",
            "every condition must hold"
        );
        assert_eq!(g.rewrite("small", &ctx(5, &[], None)), "small");
    }

    #[test]
    fn weighted_order_follows_weights() {
        let g = groups(
            "[[deployments]]\nid=\"a\"\nmodel=\"m\"\nprovider=\"mock\"\nweight=1\n\
             [[deployments]]\nid=\"b\"\nmodel=\"m\"\nprovider=\"mock\"\nweight=3\n",
        );
        let firsts = (0..4000).filter(|_| g.plan("m")[0].id == "b").count();
        // Expect 3000; the bound is many standard deviations (≈27) wide.
        assert!(
            (2800..3200).contains(&firsts),
            "b first {firsts} times of 4000"
        );
        assert_eq!(g.plan("m").len(), 2);
        assert!(g.plan("nope").is_empty());
    }

    #[test]
    fn strategies_order_by_load_latency_and_price() {
        let g = groups(
            "[router]\nstrategy=\"lowest-cost\"\n\
             [[deployments]]\nid=\"dear\"\nmodel=\"m\"\nprovider=\"mock\"\nupstream_model=\"big\"\n\
             [[deployments]]\nid=\"cheap\"\nmodel=\"m\"\nprovider=\"mock\"\nupstream_model=\"small\"\n\
             [[deployments]]\nid=\"x\"\nmodel=\"n\"\nprovider=\"mock\"\n\
             [[deployments]]\nid=\"y\"\nmodel=\"n\"\nprovider=\"mock\"\n\
             [[model_groups]]\nmodel=\"n\"\nstrategy=\"least-busy\"\n\
             [[prices]]\nmodel=\"big\"\ninput_per_mtok=5.0\noutput_per_mtok=15.0\n\
             [[prices]]\nmodel=\"small\"\ninput_per_mtok=0.1\noutput_per_mtok=0.4\n",
        );
        for _ in 0..20 {
            assert_eq!(g.plan("m")[0].id, "cheap");
        }
        let x = g.plan("n").into_iter().find(|d| d.id == "x").unwrap();
        let _busy = x.health.begin();
        for _ in 0..20 {
            assert_eq!(g.plan("n")[0].id, "y", "the idle one goes first");
        }
    }

    #[test]
    fn cooled_down_deployments_go_last() {
        let g = groups(
            "[router]\ncooldown_failures=2\n\
             [[deployments]]\nid=\"a\"\nmodel=\"m\"\nprovider=\"mock\"\nweight=100\n\
             [[deployments]]\nid=\"b\"\nmodel=\"m\"\nprovider=\"mock\"\nweight=1\n",
        );
        let a = g.plan("m").into_iter().find(|d| d.id == "a").unwrap();
        assert!(!a.health.failed(2, Duration::from_secs(60)));
        assert!(a.health.failed(2, Duration::from_secs(60)));
        for _ in 0..20 {
            let ids: Vec<String> = g.plan("m").iter().map(|d| d.id.clone()).collect();
            assert_eq!(ids, ["b", "a"]);
        }
    }

    #[test]
    fn triggers_and_retryability() {
        let s = |status, message: &str| UpstreamError::Status {
            status,
            message: message.into(),
            code: None,
            retry_after: None,
        };
        assert_eq!(
            trigger_of(&s(
                400,
                "This model's maximum context length is 8192 tokens"
            )),
            Some(FallbackTrigger::ContextWindow)
        );
        assert_eq!(trigger_of(&s(400, "bad field")), None);
        assert_eq!(trigger_of(&s(503, "x")), Some(FallbackTrigger::Error));
        assert_eq!(
            trigger_of(&UpstreamError::Timeout("the first byte")),
            Some(FallbackTrigger::Timeout)
        );
        assert_eq!(
            trigger_of(&UpstreamError::ContentPolicy("no".into())),
            Some(FallbackTrigger::ContentPolicy)
        );
        assert!(retryable(&s(429, "")) && retryable(&s(502, "")) && !retryable(&s(400, "")));
    }
}

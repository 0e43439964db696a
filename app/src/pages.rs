//! The console's pages. Access is decided on the server (the router refuses signed-out
//! visitors before rendering, and every server function checks the session again).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::{
    components::{A, Outlet},
    hooks::use_query_map,
};

use crate::api::{SetupAdmin, SignIn, SignOut, current_user, models, overview};
use crate::dto::{ModelGroupDto, OverviewDto};

/// Pages of the console, in navigation order: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/keys", "Keys"),
    ("/teams", "Teams"),
    ("/spend", "Spend"),
    ("/audit", "Audit"),
    ("/models", "Models"),
    ("/settings", "Settings"),
];

/// The frame around every signed-in page: navigation, the user and sign-out.
#[component]
pub fn Layout() -> impl IntoView {
    let me = Resource::new(|| (), |_| current_user());
    // Set only in the browser once hydration ran: lets tests (and people) tell the
    // interactive console from the server-rendered one.
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    let sign_out = ServerAction::<SignOut>::new();
    view! {
        <div class="shell" data-hydrated=move || hydrated.get().to_string()>
            <aside class="sidebar">
                <div class="brand">"AI Gateway"</div>
                <nav>
                    <ul>
                        {NAV
                            .iter()
                            .map(|(href, label)| {
                                view! {
                                    <li>
                                        <A href=*href exact=true>
                                            {*label}
                                        </A>
                                    </li>
                                }
                            })
                            .collect_view()}
                    </ul>
                </nav>
            </aside>
            <div class="main">
                <header class="topbar">
                    <Suspense fallback=|| ()>
                        {move || Suspend::new(async move {
                            match me.await {
                                Ok(Some(u)) => {
                                    view! {
                                        <span class="who" data-testid="who">
                                            {u.username}
                                            " · "
                                            {u.role}
                                        </span>
                                    }
                                        .into_any()
                                }
                                _ => ().into_any(),
                            }
                        })}
                    </Suspense>
                    <ActionForm action=sign_out attr:class="inline">
                        <button type="submit" class="link" data-testid="sign-out">
                            "Sign out"
                        </button>
                    </ActionForm>
                </header>
                <main class="content">
                    <Outlet />
                </main>
            </div>
        </div>
    }
}

fn error_text(code: &str) -> &'static str {
    match code {
        "invalid" => "Invalid user name or password.",
        "throttled" => "Too many attempts. Wait a minute and try again.",
        "mismatch" => "The two passwords differ.",
        "weak" => "The password must have at least 12 characters.",
        "denied" => "Setup refused: the master key is wrong or an admin already exists.",
        _ => "Something went wrong. Try again.",
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let sign_in = ServerAction::<SignIn>::new();
    let error = move || query.read().get("error").map(|c| error_text(&c));
    let notice = move || {
        let q = query.read();
        if q.get("setup").is_some() {
            Some("The admin account is ready. Sign in.")
        } else if q.get("signed_out").is_some() {
            Some("You are signed out.")
        } else {
            None
        }
    };
    view! {
        <Title text="Sign in" />
        <div class="auth-page">
            <div class="card auth-card">
                <h1>"Sign in"</h1>
                <p class="muted">"Local administrator (break-glass) account."</p>
                {move || notice().map(|n| view! { <p class="notice">{n}</p> })}
                {move || {
                    error().map(|e| view! { <p class="error" role="alert" data-testid="login-error">{e}</p> })
                }}
                <ActionForm action=sign_in>
                    <label>
                        "User name" <input type="text" name="username" value="admin" autocomplete="username" required />
                    </label>
                    <label>
                        "Password" <input type="password" name="password" autocomplete="current-password" required />
                    </label>
                    <button type="submit" class="primary">"Sign in"</button>
                </ActionForm>
                <p class="muted small">
                    "First run? " <a href="/setup">"Set the admin password"</a>
                </p>
            </div>
        </div>
    }
}

#[component]
pub fn SetupPage() -> impl IntoView {
    let query = use_query_map();
    let setup = ServerAction::<SetupAdmin>::new();
    let error = move || query.read().get("error").map(|c| error_text(&c));
    view! {
        <Title text="First-run setup" />
        <div class="auth-page">
            <div class="card auth-card">
                <h1>"First-run setup"</h1>
                <p class="muted">
                    "Choose the local admin's password. Prove you operate this gateway with its master key (printed at start-up in the demo)."
                </p>
                {move || error().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                <ActionForm action=setup>
                    <label>"Master key" <input type="password" name="master_key" required /></label>
                    <label>
                        "New password (12+ characters)"
                        <input type="password" name="password" autocomplete="new-password" minlength="12" required />
                    </label>
                    <label>
                        "Repeat it" <input type="password" name="confirm" autocomplete="new-password" required />
                    </label>
                    <button type="submit" class="primary">"Create admin"</button>
                </ActionForm>
            </div>
        </div>
    }
}

#[component]
pub fn OverviewPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| overview());
    view! {
        <Title text="Overview" />
        <h1>"Overview"</h1>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(o) => view! { <OverviewBody o /> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn OverviewBody(o: OverviewDto) -> impl IntoView {
    let tokens = o.prompt_tokens_today + o.completion_tokens_today;
    view! {
        <section class="stats">
            <div class="stat card" data-testid="stat-models">
                <div class="label">"Models configured"</div>
                <div class="value">{o.models.len()}</div>
            </div>
            <div class="stat card" data-testid="stat-requests">
                <div class="label">"Requests today (UTC)"</div>
                <div class="value">{o.requests_today}</div>
                <div class="sub">{o.errors_today} " failed"</div>
            </div>
            <div class="stat card" data-testid="stat-tokens">
                <div class="label">"Tokens today"</div>
                <div class="value">{tokens}</div>
                <div class="sub">
                    {o.prompt_tokens_today} " in · " {o.completion_tokens_today} " out"
                </div>
            </div>
        </section>
        <section class="card">
            <h2>"Models"</h2>
            <table>
                <thead>
                    <tr>
                        <th>"Model"</th>
                        <th>"Providers"</th>
                        <th>"Deployments"</th>
                    </tr>
                </thead>
                <tbody>
                    {o
                        .models
                        .into_iter()
                        .map(|m| {
                            view! {
                                <tr>
                                    <td class="mono">{m.name}</td>
                                    <td>{m.providers.join(", ")}</td>
                                    <td>{m.deployments}</td>
                                </tr>
                            }
                        })
                        .collect_view()}
                </tbody>
            </table>
        </section>
    }
}

/// A page whose capability arrives in a later release; says so plainly.
#[component]
fn Planned(title: &'static str, what: &'static str) -> impl IntoView {
    view! {
        <Title text=title />
        <h1>{title}</h1>
        <div class="card">
            <p>{what}</p>
            <p class="muted">"Not available in this version yet."</p>
        </div>
    }
}

#[component]
pub fn KeysPage() -> impl IntoView {
    view! { <Planned title="Keys" what="Request, approve, reveal, rotate and revoke virtual keys." /> }
}

#[component]
pub fn TeamsPage() -> impl IntoView {
    view! { <Planned title="Teams" what="Teams, their members, projects and pending key requests." /> }
}

#[component]
pub fn SpendPage() -> impl IntoView {
    view! { <Planned title="Spend" what="Spend by provider, team, model and over time; budgets and their burn." /> }
}

#[component]
pub fn AuditPage() -> impl IntoView {
    view! { <Planned title="Audit" what="The tamper-evident log of every admin action, searchable and exportable." /> }
}

#[component]
pub fn ModelsPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| models());
    view! {
        <Title text="Models" />
        <h1>"Models"</h1>
        <p class="muted">
            "Each public model name is a group of deployments. Health is live: a deployment that keeps failing cools down and is probed back in."
        </p>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(groups) => groups.into_iter().map(|g| view! { <ModelGroup g /> }).collect_view().into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

fn usd(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |p| format!("${p:.4}"))
}

#[component]
fn ModelGroup(g: ModelGroupDto) -> impl IntoView {
    let fallbacks = if g.fallbacks.is_empty() {
        "none".to_owned()
    } else {
        g.fallbacks.join(", ")
    };
    view! {
        <section class="card" data-testid="model-group" data-model=g.model.clone()>
            <h2 class="mono">{g.model.clone()}</h2>
            <p class="muted small">"Strategy: " {g.strategy} " · Fallbacks: " {fallbacks}</p>
            <table>
                <thead>
                    <tr>
                        <th>"Deployment"</th>
                        <th>"Provider"</th>
                        <th>"Upstream model"</th>
                        <th>"Weight"</th>
                        <th>"Health"</th>
                        <th>"Latency"</th>
                        <th>"Requests"</th>
                        <th>"Error rate"</th>
                        <th>"In / out per 1M tokens"</th>
                    </tr>
                </thead>
                <tbody>
                    {g
                        .deployments
                        .into_iter()
                        .map(|d| {
                            let health = if d.status == "cooling_down" {
                                format!("cooling down ({} s)", d.cooldown_remaining_ms.div_ceil(1000))
                            } else {
                                d.status.replace('_', " ")
                            };
                            let class = format!("badge {}", d.status);
                            let (row_id, row_status) = (d.id.clone(), d.status.clone());
                            view! {
                                <tr data-testid="deployment" data-id=row_id data-status=row_status>
                                    <td class="mono">{d.id}</td>
                                    <td>{d.provider}</td>
                                    <td class="mono">{d.upstream_model}</td>
                                    <td>{d.weight}</td>
                                    <td><span class=class>{health}</span></td>
                                    <td>{format!("{} ms", d.latency_ms)}</td>
                                    <td>{d.requests}</td>
                                    <td>{format!("{:.1} %", d.error_rate * 100.0)}</td>
                                    <td>{format!("{} / {}", usd(d.input_per_mtok), usd(d.output_per_mtok))}</td>
                                </tr>
                            }
                        })
                        .collect_view()}
                </tbody>
            </table>
        </section>
    }
}

#[component]
pub fn SettingsPage() -> impl IntoView {
    view! { <Planned title="Settings" what="SSO, guardrail policies and routing rules." /> }
}

#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            resp.set_status(http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <Title text="Not found" />
        <div class="auth-page">
            <div class="card auth-card">
                <h1>"Not found"</h1>
                <p>
                    <a href="/">"Back to the overview"</a>
                </p>
            </div>
        </div>
    }
}

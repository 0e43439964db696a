//! The console's pages. Access is decided on the server (the router refuses signed-out
//! visitors before rendering, and every server function checks the session again).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::{
    components::{A, Outlet},
    hooks::use_query_map,
};

use crate::api::{
    CreateTeam, DecideKey, RequestKey, RevealKey, RevokeKey, RotateKey, SetBudget, SetMembership,
    SetUserRole, SetupAdmin, SignIn, SignOut, current_user, models, my_keys, overview, spend,
    sso_label, teams, users,
};
use crate::dto::{
    KeyDto, ModelGroupDto, MyKeysDto, OverviewDto, SecretDto, SpendDto, TeamsDto, UsersDto,
};

/// Pages of the console, in navigation order: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/keys", "My keys"),
    ("/teams", "Team"),
    ("/users", "Users & roles"),
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
    provide_context(Hydrated(hydrated));
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
                                        <ActionForm action=sign_out attr:class="inline">
                                            <input type="hidden" name="csrf_token" value=u.csrf />
                                            <button type="submit" class="link" data-testid="sign-out">
                                                "Sign out"
                                            </button>
                                        </ActionForm>
                                    }
                                        .into_any()
                                }
                                _ => ().into_any(),
                            }
                        })}
                    </Suspense>
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
    let sso = Resource::new(|| (), |_| sso_label());
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
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        match sso.await {
                            Ok(Some(label)) => {
                                view! {
                                    <a class="button primary sso" href="/auth/login" rel="external" data-testid="sso">
                                        {label}
                                    </a>
                                    <p class="muted small divider">"or"</p>
                                }
                                    .into_any()
                            }
                            _ => ().into_any(),
                        }
                    })}
                </Suspense>
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

/// Set by the layout: true once the page is interactive in the browser.
#[derive(Clone, Copy)]
pub struct Hydrated(pub RwSignal<bool>);

fn is_hydrated() -> Signal<bool> {
    let h = use_context::<Hydrated>().map(|h| h.0);
    Signal::derive(move || h.is_some_and(|s| s.get()))
}

fn when(ms: i64) -> String {
    let secs = ms / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// An action's failure, in words.
fn failure<T, I>(action: ServerAction<I>) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    I: leptos::server_fn::ServerFn<Output = T, Error = ServerFnError>
        + Clone
        + Send
        + Sync
        + 'static,
{
    move || {
        action.value().get().and_then(|r| r.err()).map(|e| {
            let text = e.to_string();
            let text = text
                .strip_prefix("error running server function: ")
                .unwrap_or(&text)
                .to_owned();
            view! { <p class="error" role="alert" data-testid="action-error">{text}</p> }
        })
    }
}

#[component]
fn SecretBox(secret: SecretDto) -> impl IntoView {
    view! {
        <div class="card secret" data-testid="secret" data-key=secret.key_id>
            <h2>"Your key " {secret.name}</h2>
            <p>"Copy it now: it is shown this once and cannot be shown again."</p>
            <code class="mono" data-testid="secret-value">{secret.secret}</code>
        </div>
    }
}

fn status_badge(status: String) -> impl IntoView {
    let class = format!("badge {status}");
    view! { <span class=class data-testid="status">{status}</span> }
}

#[component]
pub fn KeysPage() -> impl IntoView {
    let request = ServerAction::<RequestKey>::new();
    let reveal = ServerAction::<RevealKey>::new();
    let rotate = ServerAction::<RotateKey>::new();
    let revoke = ServerAction::<RevokeKey>::new();
    let data = Resource::new(
        move || {
            (
                request.version().get(),
                reveal.version().get(),
                rotate.version().get(),
                revoke.version().get(),
            )
        },
        |_| my_keys(),
    );
    let shown = move || {
        reveal
            .value()
            .get()
            .and_then(|r| r.ok())
            .or_else(|| rotate.value().get().and_then(|r| r.ok()))
            .map(|secret| view! { <SecretBox secret /> })
    };
    view! {
        <Title text="My keys" />
        <h1>"My keys"</h1>
        {shown}
        {failure(request)}
        {failure(reveal)}
        {failure(rotate)}
        {failure(revoke)}
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(d) => view! { <MyKeysBody d request reveal rotate revoke /> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn MyKeysBody(
    d: MyKeysDto,
    request: ServerAction<RequestKey>,
    reveal: ServerAction<RevealKey>,
    rotate: ServerAction<RotateKey>,
    revoke: ServerAction<RevokeKey>,
) -> impl IntoView {
    let hydrated = is_hydrated();
    let csrf = d.csrf.clone();
    let request_form = if d.teams.is_empty() {
        view! {
            <p class="muted">
                "You are not in a team yet. An admin (or your SSO groups) puts you in one; then you can request keys here."
            </p>
        }
            .into_any()
    } else {
        let allowed: Vec<String> = d
            .teams
            .iter()
            .map(|t| format!("{}: {}", t.name, t.models.join(", ")))
            .collect();
        let form_csrf = csrf.clone();
        view! {
            <ActionForm action=request attr:data-testid="request-form">
                <input type="hidden" name="csrf_token" value=form_csrf />
                <div class="grid2">
                    <label>
                        "Team"
                        <select name="team_id" required>
                            {d
                                .teams
                                .iter()
                                .map(|t| view! { <option value=t.id.clone()>{t.name.clone()}</option> })
                                .collect_view()}
                        </select>
                    </label>
                    <label>"Key name" <input type="text" name="name" maxlength="128" required /></label>
                    <label>"Project (optional)" <input type="text" name="project" maxlength="128" /></label>
                    <label>
                        "Models (comma-separated; empty: all your team allows)"
                        <input type="text" name="models" />
                    </label>
                </div>
                <label>"Purpose" <textarea name="purpose" maxlength="500" rows="2"></textarea></label>
                <p class="muted small">"Allowed models — " {allowed.join(" · ")}</p>
                <button type="submit" class="primary">"Request key"</button>
            </ActionForm>
        }
            .into_any()
    };
    view! {
        <section class="card">
            <h2>"Request a key"</h2>
            {request_form}
        </section>
        <section class="card">
            <h2>"Your keys"</h2>
            {if d.keys.is_empty() {
                view! { <p class="muted">"No keys yet."</p> }.into_any()
            } else {
                view! {
                    <table>
                        <thead>
                            <tr>
                                <th>"Name"</th>
                                <th>"Team / project"</th>
                                <th>"Prefix"</th>
                                <th>"Models"</th>
                                <th>"Status"</th>
                                <th>"Requested"</th>
                                <th></th>
                            </tr>
                        </thead>
                        <tbody>
                            {d
                                .keys
                                .into_iter()
                                .map(|k| {
                                    let csrf = csrf.clone();
                                    let id = k.id.clone();
                                    let actions = match k.status.as_str() {
                                        "approved" => {
                                            view! {
                                                <ActionForm action=reveal attr:class="inline">
                                                    <input type="hidden" name="csrf_token" value=csrf />
                                                    <input type="hidden" name="key_id" value=id />
                                                    <button type="submit" class="primary" data-testid="reveal" disabled=move || !hydrated.get()>
                                                        "Reveal key"
                                                    </button>
                                                </ActionForm>
                                            }
                                                .into_any()
                                        }
                                        "active" => {
                                            let (csrf2, id2) = (csrf.clone(), id.clone());
                                            view! {
                                                <ActionForm action=rotate attr:class="inline">
                                                    <input type="hidden" name="csrf_token" value=csrf2 />
                                                    <input type="hidden" name="key_id" value=id2 />
                                                    <button type="submit" data-testid="rotate" disabled=move || !hydrated.get()>
                                                        "Rotate"
                                                    </button>
                                                </ActionForm>
                                                <ActionForm action=revoke attr:class="inline">
                                                    <input type="hidden" name="csrf_token" value=csrf />
                                                    <input type="hidden" name="key_id" value=id />
                                                    <button type="submit" class="danger" data-testid="revoke">"Revoke"</button>
                                                </ActionForm>
                                            }
                                                .into_any()
                                        }
                                        "requested" => {
                                            view! {
                                                <ActionForm action=revoke attr:class="inline">
                                                    <input type="hidden" name="csrf_token" value=csrf />
                                                    <input type="hidden" name="key_id" value=id />
                                                    <button type="submit" data-testid="withdraw">"Withdraw"</button>
                                                </ActionForm>
                                            }
                                                .into_any()
                                        }
                                        _ => ().into_any(),
                                    };
                                    let note = k
                                        .decision_reason
                                        .clone()
                                        .map(|r| view! { <div class="muted small">"Reason: " {r}</div> });
                                    view! {
                                        <tr data-testid="my-key" data-name=k.name.clone() data-status=k.status.clone()>
                                            <td>{k.name.clone()} {note}</td>
                                            <td>{k.team.clone()} {k.project.clone().map(|p| format!(" / {p}"))}</td>
                                            <td class="mono">{if k.prefix.is_empty() { "—".to_owned() } else { format!("{}…", k.prefix) }}</td>
                                            <td class="mono small">{k.models.join(", ")}</td>
                                            <td>{status_badge(k.status.clone())}</td>
                                            <td class="small">{when(k.created_at)}</td>
                                            <td>{actions}</td>
                                        </tr>
                                    }
                                })
                                .collect_view()}
                        </tbody>
                    </table>
                }
                    .into_any()
            }}
        </section>
    }
}

#[component]
pub fn TeamsPage() -> impl IntoView {
    let decide = ServerAction::<DecideKey>::new();
    let revoke = ServerAction::<RevokeKey>::new();
    let data = Resource::new(
        move || (decide.version().get(), revoke.version().get()),
        |_| teams(),
    );
    view! {
        <Title text="Team" />
        <h1>"Team"</h1>
        {failure(decide)}
        {failure(revoke)}
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(d) => view! { <TeamsBody d decide revoke /> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn TeamsBody(
    d: TeamsDto,
    decide: ServerAction<DecideKey>,
    revoke: ServerAction<RevokeKey>,
) -> impl IntoView {
    if d.teams.is_empty() {
        return view! { <p class="muted">"You are not in a team yet."</p> }.into_any();
    }
    let csrf = d.csrf.clone();
    let my_id = d.my_id.clone();
    d.teams
        .into_iter()
        .map(|t| {
            let leads = t.my_role == "lead" || t.my_role == "admin";
            let (pending, keys): (Vec<KeyDto>, Vec<KeyDto>) =
                t.keys.into_iter().partition(|k| k.status == "requested");
            let csrf = csrf.clone();
            let my_id = my_id.clone();
            let members = t
                .members
                .iter()
                .map(|m| {
                    view! {
                        <tr data-testid="member">
                            <td>{m.username.clone()}</td>
                            <td>{m.role.clone()}</td>
                        </tr>
                    }
                })
                .collect_view();
            let models = if t.models.is_empty() { "all configured models".to_owned() } else { t.models.join(", ") };
            let lead_part = leads.then(|| {
                let pending_rows = pending
                    .into_iter()
                    .map(|k| {
                        let csrf = csrf.clone();
                        let own = k.owner.is_some() && t.members.iter().any(|m| Some(&m.username) == k.owner.as_ref() && m.user_id == my_id);
                        view! {
                            <tr data-testid="pending" data-name=k.name.clone()>
                                <td>{k.name.clone()}</td>
                                <td>{k.owner.clone().unwrap_or_default()}</td>
                                <td>{k.project.clone().unwrap_or_default()}</td>
                                <td class="mono small">{k.models.join(", ")}</td>
                                <td class="small">{k.purpose.clone().unwrap_or_default()}</td>
                                <td>
                                    {if own {
                                        view! { <span class="muted small">"your own request: another lead decides"</span> }.into_any()
                                    } else {
                                        let (csrf2, id1, id2) = (csrf.clone(), k.id.clone(), k.id.clone());
                                        view! {
                                            <ActionForm action=decide attr:class="inline">
                                                <input type="hidden" name="csrf_token" value=csrf2 />
                                                <input type="hidden" name="key_id" value=id1 />
                                                <input type="hidden" name="decision" value="approve" />
                                                <button type="submit" class="primary" data-testid="approve">"Approve"</button>
                                            </ActionForm>
                                            <ActionForm action=decide attr:class="inline">
                                                <input type="hidden" name="csrf_token" value=csrf />
                                                <input type="hidden" name="key_id" value=id2 />
                                                <input type="hidden" name="decision" value="reject" />
                                                <input type="text" name="reason" placeholder="Reason" required maxlength="500" />
                                                <button type="submit" data-testid="reject">"Reject"</button>
                                            </ActionForm>
                                        }
                                            .into_any()
                                    }}
                                </td>
                            </tr>
                        }
                    })
                    .collect_view();
                let key_rows = keys
                    .into_iter()
                    .map(|k| {
                        let live = matches!(k.status.as_str(), "approved" | "active");
                        let csrf = csrf.clone();
                        view! {
                            <tr data-testid="team-key" data-name=k.name.clone() data-status=k.status.clone()>
                                <td>{k.name.clone()}</td>
                                <td>{k.owner.clone().unwrap_or_default()}</td>
                                <td class="mono">{if k.prefix.is_empty() { "—".to_owned() } else { format!("{}…", k.prefix) }}</td>
                                <td>{status_badge(k.status.clone())}</td>
                                <td>
                                    {live.then(|| view! {
                                        <ActionForm action=revoke attr:class="inline">
                                            <input type="hidden" name="csrf_token" value=csrf />
                                            <input type="hidden" name="key_id" value=k.id.clone() />
                                            <button type="submit" class="danger" data-testid="revoke">"Revoke"</button>
                                        </ActionForm>
                                    })}
                                </td>
                            </tr>
                        }
                    })
                    .collect_view();
                view! {
                    <h3>"Requests waiting for a decision"</h3>
                    <table>
                        <thead>
                            <tr><th>"Key"</th><th>"Requested by"</th><th>"Project"</th><th>"Models"</th><th>"Purpose"</th><th></th></tr>
                        </thead>
                        <tbody>{pending_rows}</tbody>
                    </table>
                    <h3>"The team's keys"</h3>
                    <table>
                        <thead>
                            <tr><th>"Key"</th><th>"Owner"</th><th>"Prefix"</th><th>"Status"</th><th></th></tr>
                        </thead>
                        <tbody>{key_rows}</tbody>
                    </table>
                }
            });
            view! {
                <section class="card" data-testid="team" data-name=t.name.clone()>
                    <h2>{t.name.clone()} <span class="muted small">" · you: " {t.my_role.clone()}</span></h2>
                    <p class="muted small">"Models: " {models} " · Projects: " {t.projects.join(", ")}</p>
                    <h3>"Members"</h3>
                    <table>
                        <thead><tr><th>"User"</th><th>"Role"</th></tr></thead>
                        <tbody>{members}</tbody>
                    </table>
                    {lead_part}
                </section>
            }
        })
        .collect_view()
        .into_any()
}

#[component]
pub fn UsersPage() -> impl IntoView {
    let set_role = ServerAction::<SetUserRole>::new();
    let set_member = ServerAction::<SetMembership>::new();
    let create_team = ServerAction::<CreateTeam>::new();
    let data = Resource::new(
        move || {
            (
                set_role.version().get(),
                set_member.version().get(),
                create_team.version().get(),
            )
        },
        |_| users(),
    );
    view! {
        <Title text="Users & roles" />
        <h1>"Users & roles"</h1>
        {failure(set_role)}
        {failure(set_member)}
        {failure(create_team)}
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(d) => view! { <UsersBody d set_role set_member create_team /> }.into_any(),
                    Err(e) => view! { <p class="error" data-testid="page-error">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn UsersBody(
    d: UsersDto,
    set_role: ServerAction<SetUserRole>,
    set_member: ServerAction<SetMembership>,
    create_team: ServerAction<CreateTeam>,
) -> impl IntoView {
    let csrf = d.csrf.clone();
    let rows = d
        .users
        .iter()
        .map(|u| {
            let teams = u
                .teams
                .iter()
                .map(|t| format!("{} ({})", t.name, t.role))
                .collect::<Vec<_>>()
                .join(", ");
            let me = u.id == d.my_id;
            let role_cell = if me {
                view! { <span>{u.role.clone()} <span class="muted small">" (you)"</span></span> }
                    .into_any()
            } else {
                let current = u.role.clone();
                let (row_csrf, row_id) = (csrf.clone(), u.id.clone());
                view! {
                    <ActionForm action=set_role attr:class="inline">
                        <input type="hidden" name="csrf_token" value=row_csrf />
                        <input type="hidden" name="user_id" value=row_id />
                        <select name="role">
                            {["member", "finance", "auditor", "admin"]
                                .into_iter()
                                .map(|r| {
                                    let selected = current == r;
                                    view! { <option value=r selected=selected>{r}</option> }
                                })
                                .collect_view()}
                        </select>
                        <button type="submit">"Save"</button>
                    </ActionForm>
                }
                .into_any()
            };
            view! {
                <tr data-testid="user" data-name=u.username.clone()>
                    <td>{u.username.clone()}</td>
                    <td>{u.display_name.clone().unwrap_or_default()}</td>
                    <td>{role_cell}</td>
                    <td class="small">{teams}</td>
                </tr>
            }
        })
        .collect_view();
    let member_csrf = csrf.clone();
    let user_options = d
        .users
        .iter()
        .map(|u| view! { <option value=u.id.clone()>{u.username.clone()}</option> })
        .collect_view();
    let team_options = d
        .teams
        .iter()
        .map(|(id, name)| view! { <option value=id.clone()>{name.clone()}</option> })
        .collect_view();
    view! {
        <section class="card">
            <h2>"People"</h2>
            <table>
                <thead><tr><th>"User"</th><th>"Name"</th><th>"Role"</th><th>"Teams"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </section>
        <section class="card">
            <h2>"Team membership"</h2>
            <ActionForm action=set_member>
                <input type="hidden" name="csrf_token" value=member_csrf />
                <div class="grid2">
                    <label>
                        "User"
                        <select name="user_id">{user_options}</select>
                    </label>
                    <label>
                        "Team"
                        <select name="team_id">{team_options}</select>
                    </label>
                    <label>
                        "Role in the team"
                        <select name="role">
                            <option value="member">"member"</option>
                            <option value="lead">"lead"</option>
                            <option value="none">"remove from team"</option>
                        </select>
                    </label>
                </div>
                <button type="submit" class="primary">"Save membership"</button>
            </ActionForm>
        </section>
        <section class="card">
            <h2>"New team"</h2>
            <ActionForm action=create_team>
                <input type="hidden" name="csrf_token" value=csrf />
                <label>"Name" <input type="text" name="name" maxlength="128" required /></label>
                <button type="submit">"Create team"</button>
            </ActionForm>
        </section>
    }
}

#[component]
pub fn SpendPage() -> impl IntoView {
    let set_budget = ServerAction::<SetBudget>::new();
    let data = Resource::new(move || set_budget.version().get(), |_| spend());
    view! {
        <Title text="Spend" />
        <h1>"Spend"</h1>
        {failure(set_budget)}
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(d) => view! { <SpendBody d set_budget /> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

fn dollars(v: f64) -> String {
    format!("${v:.2}")
}

#[component]
fn SpendBody(d: SpendDto, set_budget: ServerAction<SetBudget>) -> impl IntoView {
    let budgets = if d.budgets.is_empty() {
        view! { <p class="muted">"No budget applies to what you can see."</p> }.into_any()
    } else {
        let rows = d
            .budgets
            .into_iter()
            .map(|b| {
                let width = format!("width: {:.1}%", b.percent.clamp(0.0, 100.0));
                let bar = if b.percent >= 100.0 {
                    "bar over"
                } else if b.percent >= 80.0 {
                    "bar warn"
                } else {
                    "bar"
                };
                let scope = format!("{}:{}", b.scope_type, b.scope_id);
                let alerted = if b.alerted.is_empty() {
                    String::new()
                } else {
                    format!(
                        "alerted at {}",
                        b.alerted.iter().map(|t| format!("{t} %")).collect::<Vec<_>>().join(", ")
                    )
                };
                view! {
                    <tr data-testid="budget" data-scope=scope>
                        <td>{b.scope_type.clone()}</td>
                        <td>{b.scope_name.clone()}</td>
                        <td>{b.period.clone()}</td>
                        <td class="mono" data-testid="budget-spent">
                            {dollars(b.spent_usd)} " / " {dollars(b.amount_usd)}
                        </td>
                        <td>
                            <div class="meter"><div class=bar style=width></div></div>
                            <span class="small">{format!("{:.0} %", b.percent)}</span>
                        </td>
                        <td class="small">
                            {b.resets_at.clone().unwrap_or_else(|| "never (total)".to_owned())}
                        </td>
                        <td class="small">
                            {b.thresholds.iter().map(|t| format!("{t} %")).collect::<Vec<_>>().join(", ")}
                            <div class="muted">{alerted}</div>
                        </td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <table>
                <thead>
                    <tr>
                        <th>"Scope"</th><th>"Name"</th><th>"Period"</th><th>"Spent / budget"</th>
                        <th>"Used"</th><th>"Resets"</th><th>"Alerts"</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        }
        .into_any()
    };
    let lines = d
        .lines
        .into_iter()
        .map(|l| {
            view! {
                <tr data-testid="spend-line">
                    <td>{l.name}</td>
                    <td>{l.requests}</td>
                    <td>{l.tokens}</td>
                    <td class="mono">{format!("${:.6}", l.cost_usd)}</td>
                </tr>
            }
        })
        .collect_view();
    let form = (!d.settable.is_empty()).then(|| {
        let options = d
            .settable
            .iter()
            .map(|o| {
                let value = format!("{}:{}", o.scope_type, o.scope_id);
                view! { <option value=value>{o.label.clone()}</option> }
            })
            .collect_view();
        let csrf = d.csrf.clone();
        view! {
            <section class="card">
                <h2>"Set a budget"</h2>
                <p class="muted small">
                    "A hard limit: a request whose worst case would cross it is refused before it reaches a provider. Leave the amount empty to remove the budget."
                </p>
                <ActionForm action=set_budget attr:data-testid="budget-form">
                    <input type="hidden" name="csrf_token" value=csrf />
                    <div class="grid2">
                        <label>"For" <select name="scope">{options}</select></label>
                        <label>"Amount (USD)" <input type="number" name="amount_usd" min="0" step="0.01" /></label>
                        <label>
                            "Period"
                            <select name="period">
                                <option value="monthly">"monthly"</option>
                                <option value="weekly">"weekly"</option>
                                <option value="daily">"daily"</option>
                                <option value="total">"total"</option>
                            </select>
                        </label>
                        <label>"Alert at (%)" <input type="text" name="thresholds" value="50, 80, 100" /></label>
                    </div>
                    <button type="submit" class="primary">"Save budget"</button>
                </ActionForm>
            </section>
        }
    });
    view! {
        <section class="card">
            <h2>"Budgets this period"</h2>
            {budgets}
        </section>
        {form}
        <section class="card">
            <h2>"This month"</h2>
            <table>
                <thead><tr><th>"Who"</th><th>"Requests"</th><th>"Tokens"</th><th>"Cost"</th></tr></thead>
                <tbody>{lines}</tbody>
            </table>
        </section>
    }
}

//! The admin console: Leptos pages, components and server functions, rendered on the
//! server (`ssr`) and hydrated in the browser (`hydrate`). Every form is an `ActionForm`
//! that also works as a plain POST → redirect → GET when JavaScript is off.

pub mod api;
pub mod dto;
mod pages;
#[cfg(feature = "ssr")]
pub mod port;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::{
    SsrMode,
    components::{ParentRoute, Route, Router, Routes},
    path,
};

pub use pages::*;

/// Path of the console's stylesheet; the server serves it from the binary.
pub const STYLESHEET_PATH: &str = "/assets/gateway.css";

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="gateway-css" href=STYLESHEET_PATH />
        <Title formatter=|t: String| format!("{t} · AI Gateway") />
        <Router>
            <Routes fallback=|| view! { <NotFound /> }>
                <Route path=path!("/login") view=LoginPage />
                <Route path=path!("/setup") view=SetupPage />
                // Async: the server waits for the page's data and sends it in the HTML
                // itself, so a browser without JavaScript sees it (streamed Suspense
                // fragments need a script to be swapped in).
                <ParentRoute path=path!("") view=Layout ssr=SsrMode::Async>
                    <Route path=path!("") view=OverviewPage />
                    <Route path=path!("keys") view=KeysPage />
                    <Route path=path!("teams") view=TeamsPage />
                    <Route path=path!("users") view=UsersPage />
                    <Route path=path!("spend") view=SpendPage />
                    <Route path=path!("audit") view=AuditPage />
                    <Route path=path!("models") view=ModelsPage />
                    <Route path=path!("settings") view=SettingsPage />
                </ParentRoute>
            </Routes>
        </Router>
    }
}

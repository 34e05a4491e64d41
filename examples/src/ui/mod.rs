//! The history page of `tether sync --ui-bind ADDR`: a small read-only web
//! page where the person who lost work gets it back with a browser.
//!
//! # Pages
//!
//! | path | what |
//! |---|---|
//! | `./` (`?page=N`) | timeline: checkpoints newest first, time, files changed |
//! | `tree?at=ID&path=P` | the folder `P` of a checkpoint |
//! | `file?at=ID&path=P` | one file: size, time, download, "restore a copy" |
//! | `raw?at=ID&path=P` | the file's bytes, streamed |
//! | `diff?old=A&new=B&path=P` | what changed (default: `new` against the one before) |
//! | `restore` (POST) | writes `name (tether …).ext` beside the original |
//!
//! Every link is relative and every page sits at the top level, so the
//! page works unchanged behind `jupyter-server-proxy` at any prefix
//! (`/user/alice/proxy/9478/`). Server-rendered with minijinja (HTML
//! escaping on); no JavaScript.
//!
//! # Data flow
//!
//! Everything is read through the [`Backend`] trait the sync engine
//! pushes with: [`Backend::history`] for the timeline, [`Backend::list`]
//! for folders and changed-file counts (listings are immutable per id and
//! kept in a small cache), a subpath restore for file contents
//! ([`crate::commands::cat::fetch_file`]: verified, on disk, never held in
//! memory, streamed to the browser), [`crate::commands::diff::report`] for
//! diffs (the same code as `tether diff`, notebooks cell by cell), and
//! [`sync_core::restore_copies`] for "restore a copy" (never overwrites).
//!
//! # Safety
//!
//! * Paths in requests are [`RelPath`]s: `..`, absolute paths, NUL and
//!   backslashes are refused (400) before the backend sees them.
//! * The only write, `POST restore`, needs a same-origin request (the
//!   `Origin` header, or `Sec-Fetch-Site: same-origin`; a cross-site one is
//!   refused) **and** the per-process random token the file page puts in
//!   its form.
//! * Every remote call has a time limit: a remote that hangs gives a 504
//!   page naming it, never a request that hangs.
//! * Unknown ids and paths give a 404 page naming what was not found.
//! * Bind it to loopback (the default of the flag's examples); in a pod,
//!   `jupyter-server-proxy` reaches it there behind JupyterHub's login.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::{Environment, context};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sync_core::restore::PlanKind;
use sync_core::{Backend, BackendError, HistoryEntry, Listing, RelPath, RestoreOptions};

use crate::commands::diff::{self, Newer};
use crate::commands::{history, human_bytes};
use crate::error::CliError;

/// Checkpoints per timeline page.
pub const PAGE: usize = 50;
/// Listings kept in memory (an id's listing never changes).
const LISTING_CACHE: usize = 64;
/// How long the timeline spends counting changed files before it shows
/// what it has.
const COUNT_BUDGET: Duration = Duration::from_secs(2);
/// Listings the timeline reads at once for its counts.
const COUNT_CONCURRENCY: usize = 8;

/// What the history page needs besides the backend.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// The synced directory ("restore a copy" writes there).
    pub dir: PathBuf,
    /// The longest a page waits for the remote (listing, history); file
    /// downloads and copies get ten times as long.
    pub timeout: Duration,
}

/// The shared state of the handlers.
struct App {
    backend: Arc<dyn Backend>,
    remote: String,
    config: UiConfig,
    token: String,
    env: Environment<'static>,
    listings: Mutex<Vec<(String, Arc<Listing>)>>,
    counts: Mutex<HashMap<(String, String), usize>>,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("timeline.html", include_str!("templates/timeline.html")),
        ("tree.html", include_str!("templates/tree.html")),
        ("file.html", include_str!("templates/file.html")),
        ("diff.html", include_str!("templates/diff.html")),
        ("restored.html", include_str!("templates/restored.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        // The templates are part of the binary; a broken one fails the
        // unit tests, and at run time it becomes a 500 page.
        if let Err(e) = env.add_template(name, text) {
            tracing::error!(template = name, error = %e, "history page template does not compile");
        }
    }
    env
}

/// A random token for the restore form, new in every process.
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An error page.
#[derive(Debug)]
struct PageError {
    status: StatusCode,
    title: String,
    message: String,
    hint: String,
}

impl PageError {
    fn new(status: StatusCode, title: &str, message: impl Into<String>, hint: &str) -> Self {
        PageError {
            status,
            title: title.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Not found",
            message,
            "The timeline lists the checkpoints this remote keeps; each one's files can be browsed from there.",
        )
    }

    fn bad_path(raw: &str, e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Refused",
            format!("{raw:?} is not a path inside the synced directory: {e}"),
            "Paths are relative to the synced directory, without `..`.",
        )
    }

    /// A backend error, by kind.
    fn backend(e: BackendError, remote: &str, what: &str) -> Self {
        match e {
            BackendError::NotFound { what: missing } => {
                Self::not_found(format!("{remote} has no {missing}"))
            }
            e => Self::new(
                StatusCode::BAD_GATEWAY,
                "The remote failed",
                format!("{what} {remote}: {e}"),
                "tether keeps syncing and retries; reload this page later.",
            ),
        }
    }

    /// An error from the commands' helpers (`fetch_file`, `diff::report`),
    /// which say "has no …" for what is missing.
    fn command(e: CliError) -> Self {
        let text = e.to_string();
        if text.contains(" has no ") {
            Self::not_found(text)
        } else if matches!(e, CliError::Usage(_)) {
            Self::new(StatusCode::BAD_REQUEST, "Refused", text, "")
        } else {
            Self::new(
                StatusCode::BAD_GATEWAY,
                "The remote failed",
                text,
                "tether keeps syncing and retries; reload this page later.",
            )
        }
    }

    fn timeout(remote: &str, limit: Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "The remote did not answer",
            format!(
                "{remote} did not answer within {}",
                humantime::format_duration(limit)
            ),
            "It may be unreachable right now: tether keeps the changes and retries. Reload this page later.",
        )
    }
}

impl App {
    fn render(&self, name: &str, ctx: minijinja::Value) -> Response {
        let ctx = context! { remote => self.remote.clone(), ..ctx };
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "rendering the history page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the history page could not be rendered",
                )
                    .into_response()
            }
        }
    }

    fn error_page(&self, e: PageError) -> Response {
        let mut r = self.render(
            "error.html",
            context! {
                status => e.status.as_u16(),
                title => e.title,
                message => e.message,
                hint => e.hint,
            },
        );
        *r.status_mut() = e.status;
        r
    }

    /// `fut` within `limit`, or the 504 page.
    async fn within<T>(
        &self,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<T, PageError>>,
    ) -> Result<T, PageError> {
        tokio::time::timeout(limit, fut)
            .await
            .unwrap_or_else(|_| Err(PageError::timeout(&self.remote, limit)))
    }

    async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, PageError> {
        self.within(self.config.timeout, async {
            self.backend
                .history(limit)
                .await
                .map_err(|e| PageError::backend(e, &self.remote, "listing the history of"))
        })
        .await
    }

    /// The listing of `id` (`None`: the newest), cached by id.
    async fn listing(&self, id: Option<&str>) -> Result<Arc<Listing>, PageError> {
        if let Some(id) = id
            && let Some((_, l)) = self.listings.lock().iter().find(|(k, _)| k == id)
        {
            return Ok(Arc::clone(l));
        }
        let listing = self
            .within(self.config.timeout, async {
                self.backend
                    .list(id)
                    .await
                    .map_err(|e| PageError::backend(e, &self.remote, "listing"))
            })
            .await?;
        let listing = Arc::new(listing);
        if let Some(key) = listing.id.clone() {
            let mut cache = self.listings.lock();
            if cache.len() >= LISTING_CACHE {
                cache.remove(0);
            }
            cache.push((key, Arc::clone(&listing)));
        }
        Ok(listing)
    }

    /// Paths that differ between two checkpoints, cached.
    async fn changed(&self, old: &str, new: &str) -> Result<usize, PageError> {
        let key = (old.to_owned(), new.to_owned());
        if let Some(n) = self.counts.lock().get(&key) {
            return Ok(*n);
        }
        let a = self.listing(Some(old)).await?;
        let b = self.listing(Some(new)).await?;
        let n = diff::compare(&a.entries, &b.entries, None)
            .iter()
            .filter(|c| match c {
                diff::Changed::Added(e) | diff::Changed::Deleted(e) => e.kind != PlanKind::Dir,
                diff::Changed::Modified(_, e) => e.kind != PlanKind::Dir,
            })
            .count();
        let mut counts = self.counts.lock();
        if counts.len() > 100_000 {
            counts.clear();
        }
        counts.insert(key, n);
        Ok(n)
    }
}

/// A serializable value for a template.
fn ser<T: Serialize>(v: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

/// `2026-12-01 05:40:12` (UTC), `-` when unknown.
fn when(t: Option<SystemTime>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| {
            history::utc(t)
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_owned()
        },
    )
}

/// The first 12 characters of an id (git and snapshot ids are long).
fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// A `path` query parameter: empty is the top, anything else a [`RelPath`].
fn rel_path(raw: Option<&str>) -> Result<Option<RelPath>, PageError> {
    match raw.map(|p| p.trim_end_matches('/')) {
        None | Some("") => Ok(None),
        Some(p) => RelPath::new(p)
            .map(Some)
            .map_err(|e| PageError::bad_path(p, e)),
    }
}

/// A checkpoint id from a request: letters, digits, `-`, `_`, `.`, at
/// most 128 (snapshot ids, commit ids); anything else is refused before
/// a backend sees it. Empty is "none given".
fn id_param(raw: Option<&str>) -> Result<Option<String>, PageError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(id)
            if id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(Some(id.to_owned()))
        }
        Some(id) => Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Refused",
            format!(
                "{:?} is not a checkpoint id",
                id.chars().take(80).collect::<String>()
            ),
            "Checkpoint ids are letters, digits and dashes, as the timeline shows them.",
        )),
    }
}

/// Breadcrumbs of the folders above and at `path`.
#[derive(Serialize)]
struct Crumb {
    name: String,
    path: String,
}

fn crumbs(path: Option<&RelPath>, include_self: bool) -> Vec<Crumb> {
    let Some(p) = path else {
        return Vec::new();
    };
    let mut all: Vec<RelPath> = p.ancestors().collect();
    all.reverse();
    if !include_self {
        all.retain(|a| a != p);
    }
    all.into_iter()
        .map(|a| Crumb {
            name: a.file_name().to_owned(),
            path: a.to_string(),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct TimelineQuery {
    page: Option<usize>,
}

#[derive(Serialize)]
struct Row {
    id: String,
    short: String,
    time: String,
    files: u64,
    bytes: String,
    changed: Option<usize>,
    first: bool,
}

async fn timeline(State(app): State<Arc<App>>, Query(q): Query<TimelineQuery>) -> Response {
    let page = q.page.unwrap_or(0).min(100_000);
    let start = page.saturating_mul(PAGE);
    // One more than shown: the oldest row's parent, for its count.
    let entries = match app.history(start + PAGE + 1).await {
        Ok(e) => e,
        Err(e) => return app.error_page(e),
    };
    let shown: Vec<&HistoryEntry> = entries.iter().skip(start).take(PAGE).collect();
    // Counts of changed files: several listings at once (a remote's
    // latency, not its bandwidth, is what they cost), for at most
    // COUNT_BUDGET; each finished count is cached, so what did not finish
    // in time shows next time.
    let pairs: Vec<(&str, &str)> = shown
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((entries.get(start + i + 1)?.id.as_str(), e.id.as_str())))
        .collect();
    let counting = futures::StreamExt::for_each_concurrent(
        futures::stream::iter(pairs),
        COUNT_CONCURRENCY,
        |(old, new)| {
            let app = &app;
            async move {
                let _ = app.changed(old, new).await;
            }
        },
    );
    let _ = tokio::time::timeout(COUNT_BUDGET, counting).await;
    let mut rows = Vec::with_capacity(shown.len());
    let mut partial = false;
    for (i, e) in shown.iter().enumerate() {
        let parent = entries.get(start + i + 1);
        let changed = match parent {
            None => Some(e.files as usize),
            Some(p) => app
                .counts
                .lock()
                .get(&(p.id.clone(), e.id.clone()))
                .copied(),
        };
        partial |= changed.is_none();
        rows.push(Row {
            id: e.id.clone(),
            short: short(&e.id),
            time: when(e.time),
            files: e.files,
            bytes: human_bytes(e.bytes),
            changed,
            first: parent.is_none(),
        });
    }
    let next_page = (entries.len() > start + PAGE).then_some(page + 1);
    let prev_page = page.checked_sub(1);
    app.render(
        "timeline.html",
        context! { rows => ser(&rows), next_page, prev_page, partial },
    )
}

#[derive(Debug, Deserialize)]
struct AtPath {
    at: Option<String>,
    path: Option<String>,
}

#[derive(Serialize)]
struct TreeRow {
    name: String,
    path: String,
    dir: bool,
    link: bool,
    target: String,
    size: String,
    mtime: String,
}

async fn tree(State(app): State<Arc<App>>, Query(q): Query<AtPath>) -> Response {
    match tree_page(&app, q).await {
        Ok(r) => r,
        Err(e) => app.error_page(e),
    }
}

async fn tree_page(app: &App, q: AtPath) -> Result<Response, PageError> {
    let path = rel_path(q.path.as_deref())?;
    let at = id_param(q.at.as_deref())?;
    let listing = app.listing(at.as_deref()).await?;
    let Some(at) = listing.id.clone() else {
        return Err(PageError::not_found(format!(
            "{} is empty: nothing has been pushed yet",
            app.remote
        )));
    };
    let Some(shown) = crate::commands::ls::select(&listing, path.as_ref(), false) else {
        return Err(PageError::not_found(format!(
            "checkpoint {at} has no path {}",
            path.map(|p| p.to_string()).unwrap_or_default()
        )));
    };
    if let (Some(p), [one]) = (&path, shown.as_slice())
        && &one.path == p
        && one.kind != PlanKind::Dir
    {
        return file_page(app, Some(at), Some(p.to_string())).await;
    }
    let entries: Vec<TreeRow> = shown
        .iter()
        .map(|e| TreeRow {
            name: e.path.file_name().to_owned(),
            path: e.path.to_string(),
            dir: e.kind == PlanKind::Dir,
            link: e.kind == PlanKind::Symlink,
            target: e.target.clone().unwrap_or_default(),
            size: e.size.map_or_else(String::new, human_bytes),
            mtime: if e.kind == PlanKind::File {
                when(e.mtime)
            } else {
                String::new()
            },
        })
        .collect();
    let time = when(history_time(app, &at).await);
    Ok(app.render(
        "tree.html",
        context! {
            at => at.clone(),
            short => short(&at),
            time,
            crumbs => ser(&crumbs(path.as_ref(), true)),
            entries => ser(&entries),
        },
    ))
}

async fn file(State(app): State<Arc<App>>, Query(q): Query<AtPath>) -> Response {
    match file_page(&app, q.at, q.path).await {
        Ok(r) => r,
        Err(e) => app.error_page(e),
    }
}

async fn file_page(
    app: &App,
    at: Option<String>,
    path: Option<String>,
) -> Result<Response, PageError> {
    let Some(path) = rel_path(path.as_deref())? else {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Refused",
            "no file named (the path parameter is missing)",
            "",
        ));
    };
    let at = id_param(at.as_deref())?;
    let listing = app.listing(at.as_deref()).await?;
    let Some(at) = listing.id.clone() else {
        return Err(PageError::not_found(format!("{} is empty", app.remote)));
    };
    let Some(entry) = listing.entries.iter().find(|e| e.path == path) else {
        return Err(PageError::not_found(format!(
            "checkpoint {at} has no path {path}"
        )));
    };
    if entry.kind == PlanKind::Dir {
        return Box::pin(tree_page(
            app,
            AtPath {
                at: Some(at),
                path: Some(path.to_string()),
            },
        ))
        .await;
    }
    let saved = history_time(app, &at).await;
    let time = when(saved);
    let copy_example =
        sync_core::restore::copy_name(path.file_name(), saved.unwrap_or_else(SystemTime::now), 1);
    Ok(app.render(
        "file.html",
        context! {
            at => at.clone(),
            path => path.to_string(),
            name => path.file_name(),
            crumbs => ser(&crumbs(Some(&path), false)),
            time,
            size => entry.size.map_or_else(|| "-".into(), human_bytes),
            mtime => when(entry.mtime),
            token => app.token.clone(),
            copy_example,
        },
    ))
}

/// The time of checkpoint `id`, from the newest 1,000.
async fn history_time(app: &App, id: &str) -> Option<SystemTime> {
    app.history(1000)
        .await
        .ok()?
        .into_iter()
        .find(|e| e.id == id)?
        .time
}

async fn raw(State(app): State<Arc<App>>, Query(q): Query<AtPath>) -> Response {
    match raw_file(&app, q).await {
        Ok(r) => r,
        Err(e) => app.error_page(e),
    }
}

/// The file's bytes: restored verified into a private temporary directory,
/// opened, the directory removed (the open file stays readable), then
/// streamed in blocks.
async fn raw_file(app: &App, q: AtPath) -> Result<Response, PageError> {
    let Some(path) = rel_path(q.path.as_deref())? else {
        return Err(PageError::bad_path("", "empty"));
    };
    let at = id_param(q.at.as_deref())?;
    let limit = app.config.timeout.saturating_mul(10);
    let file = app
        .within(limit, async {
            let tmp = crate::commands::cat::private_temp_dir().map_err(PageError::command)?;
            let full = crate::commands::cat::fetch_file(
                app.backend.as_ref(),
                at.as_deref(),
                &path,
                tmp.path(),
            )
            .await
            .map_err(PageError::command)?;
            let f = tokio::fs::File::open(&full).await.map_err(|e| {
                PageError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Reading failed",
                    format!("{path}: {e}"),
                    "",
                )
            })?;
            drop(tmp);
            Ok(f)
        })
        .await?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let name: String = path
        .file_name()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut r = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    }
    Ok(r)
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    old: Option<String>,
    new: Option<String>,
    path: Option<String>,
}

#[derive(Serialize)]
struct DiffLine {
    class: &'static str,
    text: String,
}

#[derive(Serialize)]
struct DiffFile {
    status: String,
    path: String,
    line: String,
    detail: Vec<DiffLine>,
}

async fn diff_view(State(app): State<Arc<App>>, Query(q): Query<DiffQuery>) -> Response {
    match diff_page(&app, q).await {
        Ok(r) => r,
        Err(e) => app.error_page(e),
    }
}

async fn diff_page(app: &App, q: DiffQuery) -> Result<Response, PageError> {
    let path = rel_path(q.path.as_deref())?;
    let (old, new) = (id_param(q.old.as_deref())?, id_param(q.new.as_deref())?);
    let (old, new) = match (old, new) {
        (Some(o), Some(n)) => (o, n),
        (old, new) => {
            let h = app.history(10_000).await?;
            let at = match &new {
                Some(n) => h.iter().position(|e| &e.id == n).ok_or_else(|| {
                    PageError::not_found(format!(
                        "{} has no checkpoint {n} among its newest {}",
                        app.remote,
                        h.len()
                    ))
                })?,
                None => 0,
            };
            let Some(newer) = h.get(at) else {
                return Err(PageError::not_found(format!(
                    "{} has no checkpoints yet",
                    app.remote
                )));
            };
            match (old, h.get(at + 1)) {
                (Some(o), _) => (o, newer.id.clone()),
                (None, Some(p)) => (p.id.clone(), newer.id.clone()),
                (None, None) => {
                    // The first checkpoint: everything in it is new.
                    let l = app.listing(Some(&newer.id)).await?;
                    let files: Vec<DiffFile> = l
                        .entries
                        .iter()
                        .filter(|e| e.kind != PlanKind::Dir)
                        .filter(|e| path.as_ref().is_none_or(|p| e.path.starts_with(p)))
                        .map(|e| DiffFile {
                            status: "A".into(),
                            path: e.path.to_string(),
                            line: format!("A  {}", e.path),
                            detail: Vec::new(),
                        })
                        .collect();
                    let summary = format!("the first checkpoint: {} added", files.len());
                    return Ok(app.render(
                        "diff.html",
                        context! { old => "(nothing)", new => newer.id.clone(),
                        path => path.map(|p| p.to_string()), summary, files => ser(&files) },
                    ));
                }
            }
        }
    };
    let report = app
        .within(app.config.timeout.saturating_mul(10), async {
            diff::report(
                app.backend.as_ref(),
                &old,
                Newer::Checkpoint(&new),
                path.as_ref(),
                false,
                false,
            )
            .await
            .map_err(PageError::command)
        })
        .await?;
    let files: Vec<DiffFile> = report
        .files
        .iter()
        .map(|f| DiffFile {
            status: f.status.to_string(),
            path: f.path.to_string(),
            line: f.line.clone(),
            detail: f
                .detail
                .iter()
                .map(|l| DiffLine {
                    class: if l.trim_start().starts_with('+') {
                        "add"
                    } else if l.trim_start().starts_with('-') {
                        "del"
                    } else {
                        ""
                    },
                    text: l.clone(),
                })
                .collect(),
        })
        .collect();
    Ok(app.render(
        "diff.html",
        context! {
            old => report.old.clone(),
            new => report.new.clone(),
            path => path.map(|p| p.to_string()),
            summary => report.summary(),
            files => ser(&files),
        },
    ))
}

#[derive(Debug, Deserialize)]
struct RestoreForm {
    at: String,
    path: String,
    token: String,
}

/// The authority (`host:port`) of an `Origin` or `Referer` value.
fn authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    rest.split(['/', '?', '#']).next().filter(|a| !a.is_empty())
}

/// True for a request the browser marks as coming from a page of the same
/// origin: `Sec-Fetch-Site` (when sent) is `same-origin`, and the `Origin`
/// (or, without it, the `Referer`) names the host the request was sent to
/// (`Host`, or `X-Forwarded-Host` behind a proxy that rewrites `Host`).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site")
        && site != "same-origin"
    {
        return false;
    }
    let hosts: Vec<&str> = [get("host"), get("x-forwarded-host")]
        .into_iter()
        .flatten()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect();
    let from = match (get("origin"), get("referer")) {
        (Some(o), _) => authority(o),
        (None, Some(r)) => authority(r),
        (None, None) => None,
    };
    from.is_some_and(|a| hosts.iter().any(|h| h.eq_ignore_ascii_case(a)))
}

async fn restore_copy(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<RestoreForm>,
) -> Response {
    if !same_origin(&headers) {
        return app.error_page(PageError::new(
            StatusCode::FORBIDDEN,
            "Refused",
            "a restore must come from this page (cross-site request)",
            "Open the file's page and use its button.",
        ));
    }
    // Compared as hashes: equal-time whatever the input.
    if blake3::hash(form.token.as_bytes()) != blake3::hash(app.token.as_bytes()) {
        return app.error_page(PageError::new(
            StatusCode::FORBIDDEN,
            "Refused",
            "the form's token is not this server's (it changes when tether restarts)",
            "Reload the file's page and try again.",
        ));
    }
    let at = match id_param(Some(&form.at)) {
        Ok(Some(at)) => at,
        Ok(None) => return app.error_page(PageError::not_found("no checkpoint named")),
        Err(e) => return app.error_page(e),
    };
    let path = match rel_path(Some(&form.path)) {
        Ok(Some(p)) => p,
        Ok(None) => return app.error_page(PageError::bad_path(&form.path, "empty")),
        Err(e) => return app.error_page(e),
    };
    let options = RestoreOptions {
        at: Some(at.clone()),
        paths: vec![path],
        ..Default::default()
    };
    let dir = app.config.dir.clone();
    let result = app
        .within(app.config.timeout.saturating_mul(10), async {
            sync_core::restore_copies(app.backend.as_ref(), &dir, &options)
                .await
                .map_err(|e| PageError::backend(e, &app.remote, "restoring a copy from"))
        })
        .await;
    match result {
        Ok(report) => {
            for c in &report.copies {
                tracing::info!(original = %c.original, copy = %c.copy, at = %at, "restored a copy from the history page");
            }
            let copies: Vec<_> = report
                .copies
                .iter()
                .map(
                    |c| context! { original => c.original.to_string(), copy => c.copy.to_string() },
                )
                .collect();
            app.render("restored.html", context! { at, copies })
        }
        Err(e) => app.error_page(e),
    }
}

async fn not_found(State(app): State<Arc<App>>, uri: axum::http::Uri) -> Response {
    app.error_page(PageError::not_found(format!("no page {}", uri.path())))
}

/// The history page's routes over `backend`.
pub fn router(backend: Arc<dyn Backend>, config: UiConfig) -> Router {
    let app = Arc::new(App {
        remote: backend.describe(),
        backend,
        config,
        token: new_token(),
        env: environment(),
        listings: Mutex::new(Vec::new()),
        counts: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/", get(timeline))
        .route("/tree", get(tree))
        .route("/file", get(file))
        .route("/raw", get(raw))
        .route("/diff", get(diff_view))
        .route("/restore", post(restore_copy))
        .fallback(not_found)
        .with_state(app)
}

/// Binds `addr` and serves the history page in a background task until
/// the returned sender is dropped or fired.
pub async fn serve(
    addr: SocketAddr,
    backend: Arc<dyn Backend>,
    config: UiConfig,
) -> Result<tokio::sync::oneshot::Sender<()>, CliError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::usage(format!("cannot listen on --ui-bind {addr}: {e}")))?;
    let local = listener.local_addr().unwrap_or(addr);
    if !local.ip().is_loopback() {
        tracing::warn!(addr = %local, "the history page listens beyond loopback: anyone who reaches it can read the files");
    }
    tracing::info!(addr = %local, "serving the history page");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(backend, config);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "history page stopped");
        }
    });
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_same_origin_posts_pass() {
        let host = ("host", "127.0.0.1:8888");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8888")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8888"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:9478"),
            ("x-forwarded-host", "hub.example.org"),
            ("origin", "https://hub.example.org")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:8888/proxy/9478/file?x=1")
        ])));
        for bad in [
            headers(&[host]),
            headers(&[host, ("origin", "http://evil.example")]),
            headers(&[host, ("origin", "null")]),
            headers(&[
                host,
                ("origin", "http://127.0.0.1:8888"),
                ("sec-fetch-site", "cross-site"),
            ]),
            headers(&[host, ("referer", "http://evil.example/127.0.0.1:8888")]),
        ] {
            assert!(!same_origin(&bad), "{bad:?}");
        }
    }

    #[test]
    fn templates_compile_and_escape() {
        let env = environment();
        for name in [
            "timeline.html",
            "tree.html",
            "file.html",
            "diff.html",
            "restored.html",
            "error.html",
        ] {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
        let html = env
            .get_template("error.html")
            .unwrap()
            .render(context! { message => "<script>x</script>", remote => "r" })
            .unwrap();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    }

    #[test]
    fn request_paths_are_refused_outside_the_directory() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "a\\b"] {
            let e = rel_path(Some(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(rel_path(Some("")).unwrap(), None);
        assert_eq!(rel_path(Some("a/b/")).unwrap().unwrap().as_str(), "a/b");
        for bad in ["../x", "a/b", "x y", "a\0b", &"1".repeat(129)] {
            let e = id_param(Some(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(
            id_param(Some("1796103357986-615561dd")).unwrap().as_deref(),
            Some("1796103357986-615561dd")
        );
        assert_eq!(id_param(Some(" ")).unwrap(), None);
    }

    /// A backend whose remote never answers.
    #[derive(Debug)]
    struct Hanging;

    #[async_trait::async_trait]
    impl Backend for Hanging {
        fn describe(&self) -> String {
            "s3://hanging/prefix".into()
        }
        fn capabilities(&self) -> sync_core::Capabilities {
            sync_core::Capabilities {
                empty_dirs: true,
                full_mode: true,
                mtime: true,
                history: true,
            }
        }
        async fn head(&self) -> Result<Option<sync_core::RemoteHead>, BackendError> {
            std::future::pending().await
        }
        async fn push(
            &self,
            _: &sync_core::Checkpoint,
            _: &sync_core::Source,
        ) -> Result<sync_core::PushReceipt, BackendError> {
            std::future::pending().await
        }
        async fn restore(
            &self,
            _: &std::path::Path,
            _: &RestoreOptions,
        ) -> Result<sync_core::RestoreReport, BackendError> {
            std::future::pending().await
        }
        async fn history(&self, _: usize) -> Result<Vec<HistoryEntry>, BackendError> {
            std::future::pending().await
        }
        async fn list(&self, _: Option<&str>) -> Result<Listing, BackendError> {
            std::future::pending().await
        }
    }

    /// `GET path` on a fresh server over `backend` → (status, body).
    async fn get(backend: Arc<dyn Backend>, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let config = UiConfig {
            dir: dir.path().to_owned(),
            timeout: Duration::from_millis(300),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(backend, config)).await });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, text)
    }

    #[tokio::test]
    async fn a_hanging_remote_gives_a_clear_page_not_a_hang() {
        for path in ["/", "/tree", "/file?path=a", "/raw?path=a", "/diff"] {
            let (status, body) =
                tokio::time::timeout(Duration::from_secs(30), get(Arc::new(Hanging), path))
                    .await
                    .expect("the page answers");
            assert_eq!(status, 504, "{path}: {body}");
            assert!(
                body.contains("s3:&#x2f;&#x2f;hanging&#x2f;prefix did not answer within"),
                "{path}: {body}"
            );
        }
    }

    #[test]
    fn links_are_relative() {
        let env = environment();
        for name in ["timeline.html", "tree.html", "file.html", "diff.html"] {
            let src = env.get_template(name).unwrap().source().to_owned();
            for attr in ["href=\"/", "action=\"/", "src=\"/"] {
                assert!(!src.contains(attr), "{name} has an absolute link");
            }
        }
    }
}

//! Exports for the office: a filtered case list or a figures table as CSV
//! (UTF-8 with a byte-order mark, so Excel and WPS read the Chinese) or as
//! Excel (XLSX), streamed as they are written, so memory stays bounded
//! whatever the number of rows. What the rows hold — columns, headers,
//! labels, and the reporter's phone only for roles that see personal
//! data — is core's (`gridsync_core::export`); this module writes them.
//!
//! `GET /v1/office/exports/issues.csv` and `…/issues.xlsx` take the case
//! list's filters and sort (paging ignored: every matching case);
//! `…/figures.csv` and `…/figures.xlsx` the figures' parameters.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gridsync_core::{Query, RecordScope};

use crate::api::{bearer, blocking, core_error, ApiQuery, AppError, AppState};
use crate::office::{self, FigureParams, ListParams, OfficeCtx};

/// The export routes (merged into the main router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/office/exports/issues.csv", get(issues_csv))
        .route("/v1/office/exports/issues.xlsx", get(issues_xlsx))
        .route("/v1/office/exports/figures.csv", get(figures_csv))
        .route("/v1/office/exports/figures.xlsx", get(figures_xlsx))
}

/// How many bytes go to the client at once.
const CHUNK: usize = 64 << 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Xlsx,
}

/// Where rows go: CSV lines or an Excel sheet, written into chunks that
/// a channel carries to the response body.
enum Sheet {
    Csv {
        buf: Vec<u8>,
        out: Out,
    },
    Xlsx {
        book: Box<rust_xlsxwriter::Workbook>,
        row: u32,
        out: Out,
    },
}

type Out = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Bytes written into the channel (a reader that went away ends the
/// export).
struct Channel(Out, Vec<u8>);

impl std::io::Write for Channel {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(data);
        if self.1.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.1.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.1));
        self.0
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

/// A CSV cell: quoted when it holds a separator, a quote or a line break;
/// a text that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`)
/// is kept as text by a leading apostrophe.
fn csv_cell(cell: &str, out: &mut Vec<u8>) {
    let guarded;
    let cell = if cell.starts_with(['=', '+', '-', '@']) && cell.parse::<f64>().is_err() {
        guarded = format!("'{cell}");
        guarded.as_str()
    } else {
        cell
    };
    if cell.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(cell.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(cell.as_bytes());
    }
}

impl Sheet {
    fn new(format: Format, out: Out) -> Result<Sheet, gridsync_core::Error> {
        Ok(match format {
            Format::Csv => Sheet::Csv {
                // The byte-order mark that tells Excel and WPS it is UTF-8.
                buf: vec![0xEF, 0xBB, 0xBF],
                out,
            },
            Format::Xlsx => {
                let mut book = Box::new(rust_xlsxwriter::Workbook::new());
                book.add_worksheet_with_constant_memory().map_err(xlsx)?;
                Sheet::Xlsx { book, row: 0, out }
            }
        })
    }

    fn row(&mut self, cells: Vec<String>) -> Result<(), gridsync_core::Error> {
        match self {
            Sheet::Csv { buf, out } => {
                for (i, cell) in cells.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    csv_cell(cell, buf);
                }
                buf.extend_from_slice(b"\r\n");
                if buf.len() >= CHUNK {
                    let chunk = Bytes::from(std::mem::take(buf));
                    out.blocking_send(Ok(chunk)).map_err(|_| left())?;
                }
            }
            Sheet::Xlsx { book, row, .. } => {
                let sheet = book.worksheet_from_index(0).map_err(xlsx)?;
                let bold = rust_xlsxwriter::Format::new().set_bold();
                for (col, cell) in cells.iter().enumerate() {
                    let col = u16::try_from(col).unwrap_or(u16::MAX);
                    if *row == 0 {
                        sheet.write_string_with_format(*row, col, cell, &bold)
                    } else {
                        sheet.write_string(*row, col, cell)
                    }
                    .map_err(xlsx)?;
                }
                *row += 1;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), gridsync_core::Error> {
        match self {
            Sheet::Csv { buf, out } => {
                if !buf.is_empty() {
                    out.blocking_send(Ok(Bytes::from(buf)))
                        .map_err(|_| left())?;
                }
            }
            Sheet::Xlsx { mut book, out, .. } => {
                let mut channel = Channel(out, Vec::new());
                book.save_to_writer(&mut channel).map_err(xlsx)?;
                std::io::Write::flush(&mut channel)?;
            }
        }
        Ok(())
    }
}

fn xlsx(e: rust_xlsxwriter::XlsxError) -> gridsync_core::Error {
    gridsync_core::Error::Io(std::io::Error::other(e.to_string()))
}

fn left() -> gridsync_core::Error {
    gridsync_core::Error::Io(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the client left",
    ))
}

/// Authenticates, lets `check` refuse what it must (with the usual JSON
/// error), then streams what `write` writes as the response body.
async fn stream(
    state: AppState,
    headers: HeaderMap,
    format: Format,
    name: &'static str,
    check: impl FnOnce(&AppState, &OfficeCtx) -> Result<(), AppError> + Send + 'static,
    write: impl FnOnce(&AppState, &OfficeCtx, &mut Sheet) -> Result<(), gridsync_core::Error>
        + Send
        + 'static,
) -> Result<Response, AppError> {
    let token = bearer(&headers)?.to_owned();
    let checked = state.clone();
    let ctx = blocking(move || {
        let ctx = office::office_user(&checked, &token)?;
        check(&checked, &ctx)?;
        Ok(ctx)
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let done = Sheet::new(format, tx.clone()).and_then(|mut sheet| {
            write(&state, &ctx, &mut sheet)?;
            sheet.finish()
        });
        if let Err(e) = done {
            // The body ends with an error: the client sees a cut download,
            // never a complete-looking file.
            tracing::warn!(error = %e, "an export stopped");
            let _ = tx.blocking_send(Err(std::io::Error::other("the export stopped")));
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let (mime, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Xlsx => (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
    };
    let disposition = format!("attachment; filename=\"{name}.{ext}\"");
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).map_err(|_| AppError::internal())?,
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

/// A place's names (street, community, grid), falling back to the codes.
fn namer(
    state: &AppState,
) -> Result<impl Fn(&RecordScope) -> gridsync_core::export::PlaceNames, gridsync_core::Error> {
    let names = office::PlaceNames::read(state)
        .map_err(|_| gridsync_core::Error::Storage("the organisation's names".into()))?;
    Ok(move |s: &RecordScope| {
        let name = |level, id: &str| names.get(level, id).unwrap_or(id).to_owned();
        [
            name("street", &s.street),
            name("community", &s.community),
            name("grid", &s.grid),
        ]
    })
}

async fn issues(
    state: AppState,
    headers: HeaderMap,
    params: ListParams,
    format: Format,
) -> Result<Response, AppError> {
    let q = params.query(Query::issues())?;
    let checked = q.clone();
    stream(
        state,
        headers,
        format,
        "cases",
        move |state, ctx| {
            if checked.phone.is_some() {
                gridsync_core::policy::check(
                    ctx.author.role,
                    gridsync_core::policy::Action::FindByPhone,
                )
                .map_err(core_error)?;
            }
            // Refuses what the list refuses, before the first byte.
            state.store.count(&checked).map_err(core_error)?;
            Ok(())
        },
        move |state, ctx, sheet| {
            let names = namer(state)?;
            state.store.export_cases(
                &q,
                ctx.author.role,
                |s| ctx.sees_place(s),
                &names,
                |row| sheet.row(row),
            )?;
            Ok(())
        },
    )
    .await
}

async fn issues_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, AppError> {
    issues(state, headers, p, Format::Csv).await
}

async fn issues_xlsx(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, AppError> {
    issues(state, headers, p, Format::Xlsx).await
}

async fn figures(
    state: AppState,
    headers: HeaderMap,
    p: FigureParams,
    format: Format,
) -> Result<Response, AppError> {
    stream(
        state,
        headers,
        format,
        "figures",
        |_, _| Ok(()),
        move |state, ctx, sheet| {
            let now = state.store.now_ms();
            let table = office::figures_table(state, ctx, &p, now);
            let names = namer(state)?;
            let by = p.by.unwrap_or_default();
            let group = |g: &str| {
                use gridsync_core::figures::GroupBy;
                let scope = |s: &str, c: &str, gr: &str| RecordScope::new(s, c, gr);
                match by {
                    GroupBy::Street => names(&scope(g, "", ""))[0].clone(),
                    GroupBy::Community => names(&scope("", g, ""))[1].clone(),
                    GroupBy::Grid if g.is_empty() => "（社区本级）".into(),
                    GroupBy::Grid => names(&scope("", "", g))[2].clone(),
                    GroupBy::Category => gridsync_core::labels::name("category", g)
                        .unwrap_or(g)
                        .to_owned(),
                    GroupBy::Channel => gridsync_core::labels::name("source", g)
                        .unwrap_or(g)
                        .to_owned(),
                    GroupBy::Department | GroupBy::Month => {
                        if g.is_empty() {
                            "（未填）".into()
                        } else {
                            g.to_owned()
                        }
                    }
                }
            };
            sheet.row(
                gridsync_core::export::FIGURE_HEADERS
                    .iter()
                    .map(|h| (*h).to_owned())
                    .collect(),
            )?;
            for row in gridsync_core::export::figure_rows(&table, &group) {
                sheet.row(row)?;
            }
            Ok(())
        },
    )
    .await
}

async fn figures_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<FigureParams>,
) -> Result<Response, AppError> {
    figures(state, headers, p, Format::Csv).await
}

async fn figures_xlsx(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<FigureParams>,
) -> Result<Response, AppError> {
    figures(state, headers, p, Format::Xlsx).await
}

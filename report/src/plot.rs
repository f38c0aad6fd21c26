//! PNG plots of run metrics: [`write_plots`] draws ADMM and the baseline on
//! the same axes, once against the round number and once against wall time.
//!
//! Text needs a TrueType font, which is loaded at run time because plotters
//! (built with `ab_glyph`) has no font of its own. The environment variable
//! [`FONT_ENV`] names a font file to try first, before [`FONT_PATHS`]. When
//! no font loads, the plots still show every curve but carry no text.

use anyhow::{Context, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::RoundRow;

/// File name of the plot whose x axis is the round number.
pub const CURVES_BY_ROUND_FILE: &str = "curves_by_round.png";
/// File name of the plot whose x axis is the wall time.
pub const CURVES_BY_TIME_FILE: &str = "curves_by_time.png";
/// Environment variable with the path of a TrueType font file, tried before
/// [`FONT_PATHS`].
pub const FONT_ENV: &str = "ADMM_PLOT_FONT";
/// Standard locations of a TrueType sans-serif font on Debian-like Linux,
/// Arch-like Linux and macOS, tried in this order.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Font family under which the loaded font is registered. Plotters draws
/// tick labels in this family unless a text style names another one.
const FONT_FAMILY: &str = "sans-serif";

/// Size of each PNG, in pixels.
const FIGURE_SIZE: (u32, u32) = (1400, 1000);
/// Panel grid of each PNG, as (rows, columns).
const PANEL_GRID: (usize, usize) = (2, 3);

/// Font sizes, in pixels.
const FIGURE_TITLE_SIZE: u32 = 30;
const PANEL_TITLE_SIZE: u32 = 22;
const AXIS_LABEL_SIZE: u32 = 17;
const TICK_LABEL_SIZE: u32 = 14;
const LEGEND_SIZE: u32 = 15;

/// Space around each panel and for its axis labels, in pixels.
const PANEL_MARGIN: u32 = 12;
const X_LABEL_AREA: u32 = 48;
const Y_LABEL_AREA: u32 = 78;

/// Maximum number of light grid lines between two labelled ones.
const MAX_LIGHT_LINES: usize = 4;

/// Line width of every curve, in pixels.
const LINE_WIDTH: u32 = 2;
/// Series with at most this many points also get a dot at each point, so
/// that a run of one round still shows up.
const MARKER_MAX_POINTS: usize = 30;
const MARKER_RADIUS: u32 = 3;
/// Dash and gap length of dashed curves, in pixels.
const DASH: (u32, u32) = (8, 5);

/// Fraction of the data span added left and right of the x range, so that
/// dots at the first and last point are not cut off.
const X_PAD_FRACTION: f64 = 0.02;
/// Fraction of the data span added above and below a linear y range.
const Y_PAD_FRACTION: f64 = 0.05;
/// Fraction of the data span, in decades, added above and below a log y
/// range.
const LOG_PAD_FRACTION: f64 = 0.05;
/// Ratio max / min above which positive data gets a log y axis, when its
/// panel allows one: more than two decades.
const LOG_SCALE_MIN_RATIO: f64 = 100.0;

const ADMM_COLOR: RGBColor = RGBColor(31, 119, 180);
const BASELINE_COLOR: RGBColor = RGBColor(255, 127, 14);
const PRIMAL_COLOR: RGBColor = RGBColor(31, 119, 180);
const DUAL_COLOR: RGBColor = RGBColor(214, 39, 40);
const RHO_COLOR: RGBColor = RGBColor(148, 103, 189);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Writes `curves_by_round.png` and `curves_by_time.png` into `dir`,
/// creating `dir` if needed, and returns the paths of the two files.
///
/// `title` heads both figures. `baseline` may be empty, in which case the
/// panels show ADMM alone. Non-finite values are left out of every curve.
pub fn write_plots(
    dir: &Path,
    title: &str,
    admm: &[RoundRow],
    baseline: &[RoundRow],
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create plot directory {}", dir.display()))?;
    let text = text_enabled();

    let mut paths = Vec::with_capacity(2);
    for x_axis in [XAxis::Round, XAxis::WallTime] {
        let path = dir.join(x_axis.file_name());
        let panels = build_panels(x_axis, admm, baseline);
        render_figure(&path, title, x_axis, &panels, text)
            .with_context(|| format!("failed to write plot {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

/// Quantity on the x axis of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XAxis {
    Round,
    WallTime,
}

impl XAxis {
    fn file_name(self) -> &'static str {
        match self {
            XAxis::Round => CURVES_BY_ROUND_FILE,
            XAxis::WallTime => CURVES_BY_TIME_FILE,
        }
    }

    fn label(self) -> &'static str {
        match self {
            XAxis::Round => "round",
            XAxis::WallTime => "wall time (s)",
        }
    }

    fn value(self, row: &RoundRow) -> f64 {
        match self {
            // Round numbers stay far below 2^53, so the conversion is exact.
            XAxis::Round => row.round as f64,
            XAxis::WallTime => row.elapsed_seconds,
        }
    }
}

/// Rule for choosing the y axis of a panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScaleRule {
    Linear,
    /// Log when every value is positive and the values span more than
    /// [`LOG_SCALE_MIN_RATIO`], linear otherwise.
    Auto,
    /// Log over the positive values, linear when there are none.
    Log,
}

/// Stroke of a curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stroke {
    Solid,
    Dashed,
}

/// One labelled curve of finite (x, y) points.
#[derive(Debug, Clone)]
struct Series {
    label: &'static str,
    color: RGBColor,
    stroke: Stroke,
    points: Vec<(f64, f64)>,
}

/// One chart of the grid.
#[derive(Debug, Clone)]
struct Panel {
    title: &'static str,
    y_label: &'static str,
    scale: ScaleRule,
    /// Corner of the legend, or `None` for a panel whose title names its
    /// only curve.
    legend: Option<SeriesLabelPosition>,
    series: Vec<Series>,
}

/// Builds the panels of one figure: loss, g and objective always, test
/// accuracy when any row has it, and ADMM residuals and penalty when any
/// ADMM row has them. Series without finite points are left out.
fn build_panels(x_axis: XAxis, admm: &[RoundRow], baseline: &[RoundRow]) -> Vec<Panel> {
    let by_method = |value: fn(&RoundRow) -> Option<f64>| {
        let candidates = [
            series("ADMM", ADMM_COLOR, Stroke::Solid, admm, x_axis, value),
            series(
                "baseline",
                BASELINE_COLOR,
                Stroke::Solid,
                baseline,
                x_axis,
                value,
            ),
        ];
        non_empty(candidates)
    };

    let mut panels = vec![
        Panel {
            title: "training loss",
            y_label: "loss",
            scale: ScaleRule::Auto,
            legend: Some(SeriesLabelPosition::UpperRight),
            series: by_method(|row| Some(row.loss)),
        },
        Panel {
            title: "regularizer g",
            y_label: "g",
            scale: ScaleRule::Auto,
            legend: Some(SeriesLabelPosition::UpperRight),
            series: by_method(|row| Some(row.g)),
        },
        Panel {
            title: "objective (loss + g)",
            y_label: "loss + g",
            scale: ScaleRule::Auto,
            legend: Some(SeriesLabelPosition::UpperRight),
            series: by_method(|row| Some(row.objective)),
        },
    ];

    let accuracy = by_method(|row| row.test_accuracy);
    if !accuracy.is_empty() {
        panels.push(Panel {
            title: "test accuracy",
            y_label: "accuracy",
            scale: ScaleRule::Linear,
            legend: Some(SeriesLabelPosition::LowerRight),
            series: accuracy,
        });
    }
    panels.extend(residual_panel(x_axis, admm));
    panels.extend(rho_panel(x_axis, admm));
    panels
}

/// Builds the panel of ADMM primal and dual residuals with their
/// tolerances, or `None` when no ADMM row has any of them.
fn residual_panel(x_axis: XAxis, admm: &[RoundRow]) -> Option<Panel> {
    let candidates = [
        series(
            "primal residual r",
            PRIMAL_COLOR,
            Stroke::Solid,
            admm,
            x_axis,
            |row| row.primal_residual,
        ),
        series(
            "dual residual s",
            DUAL_COLOR,
            Stroke::Solid,
            admm,
            x_axis,
            |row| row.dual_residual,
        ),
        series(
            "primal tolerance ε_pri",
            PRIMAL_COLOR,
            Stroke::Dashed,
            admm,
            x_axis,
            |row| row.eps_primal,
        ),
        series(
            "dual tolerance ε_dual",
            DUAL_COLOR,
            Stroke::Dashed,
            admm,
            x_axis,
            |row| row.eps_dual,
        ),
    ];
    let series = non_empty(candidates);
    if series.is_empty() {
        return None;
    }
    Some(Panel {
        title: "ADMM residuals and tolerances",
        y_label: "norm",
        scale: ScaleRule::Log,
        legend: Some(SeriesLabelPosition::UpperRight),
        series,
    })
}

/// Builds the panel of the ADMM penalty ρ, or `None` when no ADMM row has it.
fn rho_panel(x_axis: XAxis, admm: &[RoundRow]) -> Option<Panel> {
    let rho = series("ρ", RHO_COLOR, Stroke::Solid, admm, x_axis, |row| row.rho);
    let series = non_empty([rho]);
    if series.is_empty() {
        return None;
    }
    Some(Panel {
        title: "ADMM penalty ρ",
        y_label: "ρ",
        scale: ScaleRule::Auto,
        legend: None,
        series,
    })
}

/// Builds a series from the rows where both x and `value` are finite.
fn series(
    label: &'static str,
    color: RGBColor,
    stroke: Stroke,
    rows: &[RoundRow],
    x_axis: XAxis,
    value: fn(&RoundRow) -> Option<f64>,
) -> Series {
    let points = rows
        .iter()
        .filter_map(|row| Some((x_axis.value(row), value(row)?)))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    Series {
        label,
        color,
        stroke,
        points,
    }
}

fn non_empty<const N: usize>(candidates: [Series; N]) -> Vec<Series> {
    candidates
        .into_iter()
        .filter(|series| !series.points.is_empty())
        .collect()
}

/// Y axis of one panel, resolved from its [`ScaleRule`] and its data.
#[derive(Debug, Clone, PartialEq)]
enum YAxis {
    Linear(Range<f64>),
    /// Log axis. Points with y <= 0 are not drawn.
    Log(Range<f64>),
}

impl YAxis {
    fn shows(&self, y: f64) -> bool {
        match self {
            YAxis::Linear(_) => true,
            YAxis::Log(_) => y > 0.0,
        }
    }
}

/// Chooses the y axis of a panel from its rule and the y values of its
/// series, which are all finite.
fn resolve_y_axis(rule: ScaleRule, values: &[f64]) -> YAxis {
    let positive: Vec<f64> = values.iter().copied().filter(|&y| y > 0.0).collect();
    let use_log = match rule {
        ScaleRule::Linear => false,
        ScaleRule::Log => !positive.is_empty(),
        ScaleRule::Auto => positive.len() == values.len() && spans_decades(&positive),
    };
    if use_log {
        YAxis::Log(log_range(&positive))
    } else {
        YAxis::Linear(padded_range(values, Y_PAD_FRACTION))
    }
}

/// Tells whether positive `values` span more than [`LOG_SCALE_MIN_RATIO`].
fn spans_decades(values: &[f64]) -> bool {
    match min_max(values) {
        Some((min, max)) => max / min > LOG_SCALE_MIN_RATIO,
        None => false,
    }
}

/// Returns a log-axis range around the positive `values`, widened by
/// [`LOG_PAD_FRACTION`] of their span in decades on each side. Ranges under
/// one decade are widened to one decade around their geometric middle, so
/// that the axis contains at least one labelled power of ten.
fn log_range(values: &[f64]) -> Range<f64> {
    let Some((min, max)) = min_max(values) else {
        return 0.1..10.0;
    };
    let (low, high) = (min.log10(), max.log10());
    let span = high - low;
    let (low, high) = if span < 1.0 {
        let middle = (low + high) / 2.0;
        (middle - 0.5, middle + 0.5)
    } else {
        (
            low - span * LOG_PAD_FRACTION,
            high + span * LOG_PAD_FRACTION,
        )
    };
    10f64.powf(low)..10f64.powf(high)
}

/// Returns the x range of a figure: the data range widened by
/// [`X_PAD_FRACTION`], or ±1 around a single round. Wall time starts at 0 s,
/// when training started.
fn x_range(x_axis: XAxis, values: &[f64]) -> Range<f64> {
    match (x_axis, min_max(values)) {
        (XAxis::Round, Some((min, max))) if min == max => (min - 1.0)..(max + 1.0),
        (XAxis::WallTime, Some((min, max))) if min >= 0.0 && max > 0.0 => {
            0.0..max * (1.0 + X_PAD_FRACTION)
        }
        _ => padded_range(values, X_PAD_FRACTION),
    }
}

/// Returns the range of finite `values` widened by `pad_fraction` of their
/// span on each side. A single value gets a range of ±10% around it (±1
/// around zero), and no values give 0..1.
fn padded_range(values: &[f64], pad_fraction: f64) -> Range<f64> {
    let Some((min, max)) = min_max(values) else {
        return 0.0..1.0;
    };
    let span = max - min;
    if span > 0.0 && span.is_finite() {
        let pad = span * pad_fraction;
        return (min - pad)..(max + pad);
    }
    let pad = if min == 0.0 { 1.0 } else { min.abs() * 0.1 };
    (min - pad)..(max + pad)
}

/// Returns the minimum and maximum of the finite `values`, or `None` when
/// there are none.
fn min_max(values: &[f64]) -> Option<(f64, f64)> {
    values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((min, max)) => Some((min.min(v), max.max(v))),
        })
}

/// Draws all panels of one figure into a PNG at `path`. Without `text`,
/// the figure has curves, grid lines and frames but no captions, tick
/// labels or legends.
fn render_figure(
    path: &Path,
    title: &str,
    x_axis: XAxis,
    panels: &[Panel],
    text: bool,
) -> Result<()> {
    let root = BitMapBackend::new(path, FIGURE_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let body = if text {
        root.titled(title, (FONT_FAMILY, FIGURE_TITLE_SIZE))?
    } else {
        root.clone()
    };

    // The x range is shared by all panels, so that one round or second sits
    // at the same horizontal position in every panel.
    let x_values: Vec<f64> = panels
        .iter()
        .flat_map(|panel| &panel.series)
        .flat_map(|series| series.points.iter().map(|&(x, _)| x))
        .collect();
    let x_range = x_range(x_axis, &x_values);

    let cells = body.split_evenly(PANEL_GRID);
    for (panel, cell) in panels.iter().zip(&cells) {
        let frame = Frame {
            area: cell,
            x_axis,
            x_range: x_range.clone(),
            text,
        };
        draw_panel(&frame, panel)
            .with_context(|| format!("failed to draw panel {}", panel.title))?;
    }
    root.present()?;
    Ok(())
}

/// Drawing area and x axis of one panel.
struct Frame<'a, 'b> {
    area: &'a Area<'b>,
    x_axis: XAxis,
    x_range: Range<f64>,
    text: bool,
}

/// Draws one panel on a linear or log y axis.
fn draw_panel(frame: &Frame, panel: &Panel) -> Result<()> {
    let y_values: Vec<f64> = panel
        .series
        .iter()
        .flat_map(|series| series.points.iter().map(|&(_, y)| y))
        .collect();
    let y_axis = resolve_y_axis(panel.scale, &y_values);
    match &y_axis {
        YAxis::Linear(range) => {
            let coord: RangedCoordf64 = range.clone().into();
            draw_chart(frame, panel, &y_axis, coord, None)
        }
        YAxis::Log(range) => {
            let coord: LogCoord<f64> = range.clone().log_scale().into();
            draw_chart(frame, panel, &y_axis, coord, Some(&format_log_tick))
        }
    }
}

/// Formats a tick of a log axis in scientific notation with one
/// significant digit, such as "2e-3". Plotters computes these ticks by
/// repeated multiplication, so a plain `{:e}` would show 9.999999999999999e-5.
fn format_log_tick(value: &f64) -> String {
    format!("{value:.0e}")
}

/// Formats a tick of a linear axis with at most six decimals and no
/// trailing zeros, so that rounds read "10" and not "10.0".
fn format_trimmed_tick(value: &f64) -> String {
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// Draws the frame, grid, curves and legend of one panel on the y
/// coordinate `y_coord`, which matches `y_axis`.
fn draw_chart<Y>(
    frame: &Frame,
    panel: &Panel,
    y_axis: &YAxis,
    y_coord: Y,
    y_format: Option<&dyn Fn(&f64) -> String>,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut builder = ChartBuilder::on(frame.area);
    builder.margin(PANEL_MARGIN).margin_right(PANEL_MARGIN * 2);
    if frame.text {
        builder
            .caption(panel.title, (FONT_FAMILY, PANEL_TITLE_SIZE))
            .x_label_area_size(X_LABEL_AREA)
            .y_label_area_size(Y_LABEL_AREA);
    }
    let mut chart = builder.build_cartesian_2d(frame.x_range.clone(), y_coord)?;

    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235))
        .x_max_light_lines(MAX_LIGHT_LINES)
        .y_max_light_lines(MAX_LIGHT_LINES);
    if frame.text {
        if frame.x_axis == XAxis::Round {
            mesh.x_label_formatter(&format_trimmed_tick);
        }
        mesh.x_desc(frame.x_axis.label())
            .y_desc(panel.y_label)
            .axis_desc_style((FONT_FAMILY, AXIS_LABEL_SIZE))
            .label_style((FONT_FAMILY, TICK_LABEL_SIZE));
        if let Some(format) = y_format {
            mesh.y_label_formatter(format);
        }
    }
    mesh.draw()?;
    if !frame.text {
        // Axes live in the label areas, which need text, so the plotting
        // area gets a plain border instead.
        let plot = chart.plotting_area().strip_coord_spec();
        let (width, height) = plot.dim_in_pixel();
        let corner = (width as i32 - 1, height as i32 - 1);
        plot.draw(&Rectangle::new([(0, 0), corner], BLACK.stroke_width(1)))?;
    }

    for series in &panel.series {
        draw_series(&mut chart, series, y_axis, frame.text)?;
    }
    let legend = panel
        .legend
        .clone()
        .filter(|_| frame.text && !panel.series.is_empty());
    if let Some(position) = legend {
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.5))
            .label_font((FONT_FAMILY, LEGEND_SIZE))
            .draw()?;
    }
    Ok(())
}

/// Draws one curve, with dots at its points when it has few, and adds it
/// to the legend when `text` is on.
fn draw_series<'a, 'b: 'a, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
    series: &Series,
    y_axis: &YAxis,
    text: bool,
) -> Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    let points: Vec<(f64, f64)> = series
        .points
        .iter()
        .copied()
        .filter(|&(_, y)| y_axis.shows(y))
        .collect();
    let style = series.color.stroke_width(LINE_WIDTH);

    let annotation = match series.stroke {
        Stroke::Solid => chart.draw_series(LineSeries::new(points.iter().copied(), style))?,
        Stroke::Dashed => chart.draw_series(DashedLineSeries::new(
            points.iter().copied(),
            DASH.0,
            DASH.1,
            style,
        ))?,
    };
    if text {
        // The legend sample is a 20 px line, drawn as two pieces so that a
        // dashed curve gets a gap between them.
        let gap = match series.stroke {
            Stroke::Solid => 0,
            Stroke::Dashed => 4,
        };
        annotation.label(series.label).legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (8, 0)], style)
                + PathElement::new(vec![(8 + gap, 0), (20, 0)], style)
        });
    }

    if points.len() <= MARKER_MAX_POINTS {
        let dots = points
            .iter()
            .map(|&point| Circle::new(point, MARKER_RADIUS, style.filled()));
        chart.draw_series(dots)?;
    }
    Ok(())
}

/// Tells whether a font is registered with plotters, loading one on the
/// first call.
fn text_enabled() -> bool {
    static FONT_LOADED: OnceLock<bool> = OnceLock::new();
    *FONT_LOADED.get_or_init(register_first_font)
}

/// Registers the first font among [`FONT_ENV`] and [`FONT_PATHS`] that
/// loads, and returns whether one did. Logs a warning when none does.
fn register_first_font() -> bool {
    let mut tried: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os(FONT_ENV).filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        match register_font_file(&path) {
            Ok(()) => return true,
            Err(error) => tracing::warn!(
                path = %path.display(),
                error = %format!("{error:#}"),
                "font named by {FONT_ENV} failed to load, so trying the standard font paths"
            ),
        }
        tried.push(path);
    }

    for path in FONT_PATHS.iter().map(PathBuf::from) {
        match register_font_file(&path) {
            Ok(()) => return true,
            Err(error) => tracing::debug!(
                path = %path.display(),
                error = %format!("{error:#}"),
                "font not loaded"
            ),
        }
        tried.push(path);
    }

    let tried: Vec<String> = tried
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    tracing::warn!(
        tried = %tried.join(", "),
        "no TrueType font found, so plots are drawn without titles, labels or legends. \
         Set {FONT_ENV} to the path of a .ttf file to get them"
    );
    false
}

/// Reads a TrueType font file and registers it as [`FONT_FAMILY`].
fn register_font_file(path: &Path) -> Result<()> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    // Plotters keeps fonts for the life of the process and needs 'static
    // bytes. `register_first_font` runs once per process (`text_enabled`
    // caches its result), so the leak is at most the font files it tries.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a valid TrueType font", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    /// A blank white 1400x1000 PNG from plotters-bitmap 0.3.7 is about 23 KB
    /// (measured), so a larger file has something drawn on it.
    const MIN_PLOT_BYTES: u64 = 30_000;

    fn admm_rows(count: u64, with_accuracy: bool) -> Vec<RoundRow> {
        (1..=count)
            .map(|round| {
                let t = round as f64;
                let loss = 10.0 * (-0.3 * t).exp() + 0.01;
                let g = 0.5 + 0.1 / t;
                RoundRow {
                    method: "admm".to_owned(),
                    round,
                    elapsed_seconds: 0.4 * t,
                    round_seconds: 0.4,
                    loss,
                    g,
                    objective: loss + g,
                    test_accuracy: with_accuracy.then(|| 0.95 - 0.5 * (-0.2 * t).exp()),
                    primal_residual: Some(2.0 * (-0.25 * t).exp()),
                    dual_residual: Some(1.0 / t),
                    eps_primal: Some(1e-3 * (1.0 + 0.01 * t)),
                    eps_dual: Some(2e-3),
                    rho: Some(if round < 10 { 1.0 } else { 2.0 }),
                    ..RoundRow::default()
                }
            })
            .collect()
    }

    fn baseline_rows(count: u64, with_accuracy: bool) -> Vec<RoundRow> {
        (1..=count)
            .map(|round| {
                let t = round as f64;
                let loss = 8.0 * (-0.2 * t).exp() + 0.02;
                RoundRow {
                    method: "baseline".to_owned(),
                    round,
                    elapsed_seconds: 0.15 * t,
                    round_seconds: 0.15,
                    loss,
                    g: 0.5,
                    objective: loss + 0.5,
                    test_accuracy: with_accuracy.then(|| 0.93 - 0.5 * (-0.3 * t).exp()),
                    ..RoundRow::default()
                }
            })
            .collect()
    }

    fn assert_plots_written(paths: &[PathBuf], dir: &Path) {
        let expected = [
            dir.join(CURVES_BY_ROUND_FILE),
            dir.join(CURVES_BY_TIME_FILE),
        ];
        assert_eq!(paths, expected);
        for path in paths {
            let bytes = std::fs::read(path).expect("plot file is readable");
            assert!(
                bytes.starts_with(PNG_SIGNATURE),
                "{} is not a PNG",
                path.display()
            );
            let size = bytes.len() as u64;
            assert!(
                size > MIN_PLOT_BYTES,
                "{} has only {size} bytes",
                path.display()
            );
        }
    }

    #[test]
    fn plots_with_accuracy_and_residuals() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let paths = write_plots(
            dir.path(),
            "synthetic classifier",
            &admm_rows(40, true),
            &baseline_rows(40, true),
        )
        .expect("plots written");
        assert_plots_written(&paths, dir.path());
    }

    #[test]
    fn plots_without_accuracy() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let paths = write_plots(
            dir.path(),
            "synthetic regression",
            &admm_rows(40, false),
            &baseline_rows(40, false),
        )
        .expect("plots written");
        assert_plots_written(&paths, dir.path());
    }

    #[test]
    fn plots_with_empty_baseline() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let paths =
            write_plots(dir.path(), "ADMM only", &admm_rows(25, true), &[]).expect("plots written");
        assert_plots_written(&paths, dir.path());
    }

    #[test]
    fn plots_with_one_row() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let paths = write_plots(
            dir.path(),
            "one round",
            &admm_rows(1, true),
            &baseline_rows(1, true),
        )
        .expect("plots written");
        assert_plots_written(&paths, dir.path());
    }

    #[test]
    fn plots_with_equal_and_non_finite_values() {
        let mut admm = admm_rows(5, false);
        for row in &mut admm {
            row.loss = 1.0;
            row.g = 0.0;
            row.objective = 1.0;
            row.primal_residual = Some(0.0);
        }
        admm[2].loss = f64::NAN;
        admm[3].objective = f64::INFINITY;
        admm[4].elapsed_seconds = f64::NAN;
        let dir = tempfile::tempdir().expect("temporary directory");
        let paths = write_plots(dir.path(), "flat", &admm, &[]).expect("plots written");
        assert_plots_written(&paths, dir.path());
    }

    #[test]
    fn plots_without_rows() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let paths = write_plots(dir.path(), "no rows", &[], &[]).expect("plots written");
        assert_plots_written(&paths, dir.path());
    }

    fn figure_size_without_text(admm: &[RoundRow], baseline: &[RoundRow]) -> u64 {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("no_text.png");
        let panels = build_panels(XAxis::Round, admm, baseline);
        render_figure(&path, "ignored", XAxis::Round, &panels, false).expect("figure drawn");

        let bytes = std::fs::read(&path).expect("plot file is readable");
        assert!(
            bytes.starts_with(PNG_SIGNATURE),
            "{} is not a PNG",
            path.display()
        );
        bytes.len() as u64
    }

    #[test]
    fn figure_without_text_draws_curves() {
        let with_curves = figure_size_without_text(&admm_rows(30, true), &baseline_rows(30, true));
        let empty = figure_size_without_text(&[], &[]);
        assert!(with_curves > MIN_PLOT_BYTES, "only {with_curves} bytes");
        // Grid and frames alone compress to about 40 KB, and these curves
        // add about 120 KB (measured), so they at least double the size.
        assert!(
            with_curves > 2 * empty,
            "{with_curves} bytes with curves, {empty} without"
        );
    }

    #[test]
    fn panels_follow_available_metrics() {
        let titles =
            |panels: Vec<Panel>| panels.iter().map(|panel| panel.title).collect::<Vec<_>>();
        let with_accuracy =
            build_panels(XAxis::Round, &admm_rows(3, true), &baseline_rows(3, true));
        assert_eq!(
            titles(with_accuracy),
            [
                "training loss",
                "regularizer g",
                "objective (loss + g)",
                "test accuracy",
                "ADMM residuals and tolerances",
                "ADMM penalty ρ",
            ]
        );

        let bare_admm: Vec<RoundRow> = baseline_rows(3, false);
        let bare = build_panels(XAxis::WallTime, &bare_admm, &[]);
        assert_eq!(
            titles(bare),
            ["training loss", "regularizer g", "objective (loss + g)"]
        );
    }

    #[test]
    fn series_skip_non_finite_points() {
        let mut rows = admm_rows(4, false);
        rows[1].loss = f64::NAN;
        rows[2].elapsed_seconds = f64::INFINITY;
        let loss = series(
            "ADMM",
            ADMM_COLOR,
            Stroke::Solid,
            &rows,
            XAxis::WallTime,
            |row| Some(row.loss),
        );
        let xs: Vec<f64> = loss.points.iter().map(|&(x, _)| x).collect();
        assert_eq!(xs, [0.4, 1.6]);
    }

    #[test]
    fn auto_scale_needs_two_decades() {
        let narrow = resolve_y_axis(ScaleRule::Auto, &[1.0, 50.0]);
        assert!(matches!(narrow, YAxis::Linear(_)), "{narrow:?}");

        let wide = resolve_y_axis(ScaleRule::Auto, &[0.05, 50.0]);
        assert!(matches!(wide, YAxis::Log(_)), "{wide:?}");

        let with_zero = resolve_y_axis(ScaleRule::Auto, &[0.0, 0.001, 50.0]);
        assert!(matches!(with_zero, YAxis::Linear(_)), "{with_zero:?}");
    }

    #[test]
    fn log_scale_falls_back_without_positive_values() {
        let non_positive = resolve_y_axis(ScaleRule::Log, &[0.0, -1.0]);
        let YAxis::Linear(range) = non_positive else {
            panic!("expected a linear axis, got {non_positive:?}")
        };
        assert_range_near(range, -1.05..0.05);

        let empty = resolve_y_axis(ScaleRule::Log, &[]);
        assert_eq!(empty, YAxis::Linear(0.0..1.0));
    }

    fn assert_range_near(actual: Range<f64>, expected: Range<f64>) {
        let tolerance = 1e-12 * (expected.end - expected.start).abs().max(1.0);
        assert!(
            (actual.start - expected.start).abs() <= tolerance,
            "{actual:?} != {expected:?}"
        );
        assert!(
            (actual.end - expected.end).abs() <= tolerance,
            "{actual:?} != {expected:?}"
        );
    }

    #[test]
    fn log_range_spans_one_decade_at_least() {
        assert_range_near(log_range(&[0.01]), 0.01 / 10f64.sqrt()..0.01 * 10f64.sqrt());
        assert_range_near(log_range(&[1.0, 100.0]), 10f64.powf(-0.1)..10f64.powf(2.1));
        assert_range_near(log_range(&[]), 0.1..10.0);
    }

    #[test]
    fn padded_range_widens_equal_values() {
        assert_range_near(padded_range(&[2.0, 2.0], 0.05), 1.8..2.2);
        assert_range_near(padded_range(&[0.0], 0.05), -1.0..1.0);
        assert_range_near(padded_range(&[0.0, 10.0], 0.05), -0.5..10.5);
        assert_range_near(padded_range(&[f64::NAN], 0.05), 0.0..1.0);
    }
}

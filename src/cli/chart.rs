//! The benchmark's chart: median time per call of every row, the GPU beside the CPU backend,
//! on a log axis, with the time a copy of the row's bytes takes at the adapter's measured
//! copy bandwidth as the yardstick. Drawn with plotters' SVG backend (text is SVG text, so no
//! font library is needed).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const GPU: RGBColor = RGBColor(72, 120, 208);
const CPU: RGBColor = RGBColor(238, 133, 74);

/// One (loss, shape) row of the chart.
struct Row {
    label: String,
    gpu_ms: Option<f64>,
    cpu_ms: Option<f64>,
    /// The least bytes the loss must move (inputs read, gradients written).
    bytes: Option<f64>,
}

/// `64x131072` for a shape given as a list (or a string, as older files have it).
pub fn shape_text(shape: &serde_json::Value) -> String {
    match shape.as_array() {
        Some(dims) => dims
            .iter()
            .map(|d| d.as_u64().map_or("?".into(), |d| d.to_string()))
            .collect::<Vec<_>>()
            .join("x"),
        None => shape.as_str().unwrap_or("?").to_string(),
    }
}

fn rows(results: &[serde_json::Value]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for r in results {
        let label = format!(
            "{} {}",
            r["loss"].as_str().unwrap_or("?"),
            shape_text(&r["shape"])
        );
        let i = match rows.iter().position(|row| row.label == label) {
            Some(i) => i,
            None => {
                rows.push(Row {
                    label,
                    gpu_ms: None,
                    cpu_ms: None,
                    bytes: None,
                });
                rows.len() - 1
            }
        };
        let ms = r["median_ms"].as_f64().filter(|ms| *ms > 0.0);
        match r["backend"].as_str() {
            Some("gpu") => rows[i].gpu_ms = ms,
            Some("cpu") => rows[i].cpu_ms = ms,
            _ => continue,
        }
        rows[i].bytes = rows[i].bytes.or(r["bytes_min"].as_f64());
    }
    rows
}

/// `ms` with as many decimals as its first significant digit needs (0.001, 0.5, 20).
fn decimal(ms: f64) -> String {
    let decimals = (-ms.log10().floor()).max(0.0) as usize;
    format!("{ms:.decimals$}")
}

/// The SVG chart of a `bench --json` document (`adapter.name`, `copy_gbps`, `results`).
///
/// # Errors
/// A document without results, or a drawing error, as text.
pub fn chart(doc: &serde_json::Value) -> Result<String, String> {
    let results = doc["results"]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or("the document has no results")?;
    let adapter = doc["adapter"]["name"].as_str().unwrap_or("unknown adapter");
    let copy_gbps = doc["copy_gbps"].as_f64().filter(|g| *g > 0.0);
    let rows = rows(results);
    let copy_ms = |row: &Row| Some(row.bytes? / (copy_gbps? * 1e9) * 1e3);
    let times: Vec<f64> = rows
        .iter()
        .flat_map(|r| [r.gpu_ms, r.cpu_ms, copy_ms(r)])
        .flatten()
        .collect();
    if times.is_empty() {
        return Err("no row has a time".into());
    }
    let lo = times.iter().copied().fold(f64::INFINITY, f64::min) / 2.0;
    let hi = times.iter().copied().fold(0.0, f64::max) * 2.0;
    let n = rows.len();
    // Three empty bands on top hold the legend.
    let bands = n + 3;
    let height = 110 + 22 * bands as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (980, height)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("wgpu-losses bench on {adapter}: median time per call"),
                ("sans-serif", 16),
            )
            .margin(12)
            .margin_left(250)
            .x_label_area_size(36)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..bands as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("ms per call (log scale)")
            .x_label_formatter(&|ms| decimal(*ms))
            .draw()
            .map_err(err)?;
        let mut legend = [true; 3];
        for (i, row) in rows.iter().enumerate() {
            // The first row at the top: row i occupies the band [y, y + 1].
            let y = (n - 1 - i) as f64;
            let bars = [
                (row.gpu_ms, GPU, y + 0.52, y + 0.9),
                (row.cpu_ms, CPU, y + 0.1, y + 0.48),
            ];
            for (k, (ms, colour, y0, y1)) in bars.into_iter().enumerate() {
                let Some(ms) = ms else { continue };
                let drawn = chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(lo, y0), (ms, y1)],
                        colour.filled(),
                    )))
                    .map_err(err)?;
                if std::mem::take(&mut legend[k]) {
                    let name = ["GPU", "CPU backend"][k];
                    drawn.label(name).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                    });
                }
            }
            if let Some(ms) = copy_ms(row) {
                let drawn = chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(ms, y + 0.04), (ms, y + 0.96)],
                        BLACK.stroke_width(2),
                    )))
                    .map_err(err)?;
                if std::mem::take(&mut legend[2]) {
                    drawn
                        .label("a copy of the same bytes at the copy kernel's bandwidth")
                        .legend(|(x, y)| {
                            PathElement::new(vec![(x + 6, y - 6), (x + 6, y + 6)], BLACK)
                        });
                }
            }
            let (px, py) = chart.backend_coord(&(lo, y + 0.5));
            let font = TextStyle::from(("sans-serif", 12).into_font())
                .pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(row.label.clone(), (px - 8, py), font))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_row_with_its_times() {
        let doc = serde_json::json!({
            "adapter": {"name": "test <adapter>"},
            "copy_gbps": 10.0,
            "results": [
                {"loss": "cross-entropy", "shape": [32, 10], "backend": "gpu", "median_ms": 0.5, "bytes_min": 2560},
                {"loss": "cross-entropy", "shape": [32, 10], "backend": "cpu", "median_ms": 0.01, "bytes_min": 2560},
                {"loss": "mse", "shape": [4194304], "backend": "cpu", "median_ms": 3.0, "bytes_min": 50331648},
            ],
        });
        let svg = chart(&doc).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("cross-entropy 32x10") && svg.contains("mse 4194304"));
        assert!(
            svg.contains("test &lt;adapter&gt;"),
            "the adapter's name, escaped"
        );
        // Two GPU/CPU bars for cross-entropy, one for mse, a copy tick for each row.
        assert_eq!(
            svg.matches(&format!("fill=\"#{:02X}{:02X}{:02X}\"", 72, 120, 208))
                .count(),
            2
        );
        assert!(chart(&serde_json::json!({"results": []})).is_err());
    }
}

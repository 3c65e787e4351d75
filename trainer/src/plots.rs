//! The trainer's figures — score distributions (paper Fig. 2), the sample weights (Eq. 1) and MSE
//! per score (Fig. 3) — each written as SVG (for reports) and PNG (for anything that shows images).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::eval::Metrics;
use crate::labels::ImageLabel;
use crate::splits::{PAPER_BINS, SampleWeights, bin_of};

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A figure drawn the same way on any plotters backend.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Writes `<stem>.svg` and `<stem>.png`; returns both paths.
pub fn save(figure: &impl Figure, stem: &Path) -> Result<[PathBuf; 2]> {
    let with_extension = |extension: &str| {
        let mut name = OsString::from(stem.as_os_str());
        name.push(extension);
        PathBuf::from(name)
    };
    let (svg, png) = (with_extension(".svg"), with_extension(".png"));
    // Text is laid out (both backends) and rasterised (PNG) with a font compiled in, so no system
    // fonts are needed.
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font is valid"));
    });
    let (width, height) = figure.size();
    let error = |e: &dyn std::fmt::Debug| anyhow!("plotting {} failed: {e:?}", stem.display());

    let root = SVGBackend::new(&svg, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    figure.draw(&root).map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))?;
    drop(root);

    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| error(&e))?;
        figure.draw(&root).map_err(|e| error(&e))?;
        root.present().map_err(|e| error(&e))?;
    }
    image::RgbImage::from_raw(width, height, pixels)
        .expect("the buffer has width x height RGB pixels")
        .save(&png)
        .map_err(|e| anyhow!("cannot write {}: {e}", png.display()))?;
    Ok([svg, png])
}

/// Fig. 2: one histogram of scores (0.1-wide bins, share of images) per set.
pub struct ScoreDistributions<'a>(pub &'a [(String, Vec<&'a ImageLabel>)]);

impl Figure for ScoreDistributions<'_> {
    fn size(&self) -> (u32, u32) {
        (360 * self.0.len().max(1) as u32, 320)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        for ((name, labels), area) in self.0.iter().zip(root.split_evenly((1, self.0.len().max(1)))) {
            // Fig. 2 at the resolution of Eq. 1's bins.
            let mut counts = vec![0usize; PAPER_BINS];
            for l in labels {
                counts[bin_of(l.mean(), PAPER_BINS)] += 1;
            }
            let total = labels.len().max(1) as f64;
            let top = counts.iter().map(|&c| c as f64 / total).fold(0.01, f64::max);
            let mut chart = ChartBuilder::on(&area)
                .caption(format!("{name} ({})", labels.len()), ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(44)
                .build_cartesian_2d(1f64..10f64, 0f64..top * 1.1)?;
            chart.configure_mesh().x_desc("score").y_desc("share").draw()?;
            chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x = 1.0 + i as f64 * 0.1;
                Rectangle::new([(x, 0.0), (x + 0.1, c as f64 / total)], BLUE.mix(0.6).filled())
            }))?;
        }
        Ok(())
    }
}

/// The sample weight of each of the B bins (log scale).
pub struct SampleWeightsFigure<'a>(pub &'a SampleWeights);

impl Figure for SampleWeightsFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (720, 360)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let weights = self.0;
        let (min, max) = weights.range();
        // No training scores means no weights: a log axis from inf to 0 would never finish its
        // key points, so the empty figure gets a fixed axis and says why it is empty.
        let empty = !(min > 0.0 && max.is_finite() && max >= min);
        let (floor, ceiling) = if empty { (0.5, 2.0) } else { (f64::from(min) * 0.5, f64::from(max) * 2.0) };
        let bins = weights.weights.len();
        let width = 9.0 / bins.max(1) as f64;
        let caption = if empty { "sample weights: no training scores".to_string() } else { format!("sample weights (Eq. 1, {bins} bins)") };
        let mut chart = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(1f64..10f64, (floor..ceiling).log_scale())?;
        chart.configure_mesh().x_desc("score").y_desc("weight").draw()?;
        chart.draw_series(weights.weights.iter().enumerate().filter(|(_, w)| **w > 0.0).map(|(i, &w)| {
            let x = 1.0 + i as f64 * width;
            Rectangle::new([(x, floor), (x + width, f64::from(w))], RED.mix(0.6).filled())
        }))?;
        Ok(())
    }
}

/// Fig. 3: MSE per score, one line per test set.
pub struct MseByScore<'a>(pub &'a [(String, Metrics)]);

impl Figure for MseByScore<'_> {
    fn size(&self) -> (u32, u32) {
        (720, 420)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        // A non-finite MSE (a model predicting ±inf or NaN) is left out: an axis up to infinity
        // sends plotters' tick search into an endless loop.
        let top = self.0.iter().flat_map(|(_, m)| m.mse_by_score.iter().map(|b| b.2)).filter(|v| v.is_finite()).fold(0.1, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption("MSE per aesthetic score (paper Fig. 3)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(1f32..10f32, 0f64..top * 1.1)?;
        chart.configure_mesh().x_desc("true score").y_desc("MSE").draw()?;
        for (i, (name, m)) in self.0.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(m.mse_by_score.iter().filter(|b| b.2.is_finite()).map(|b| (b.0 + 0.25, b.2)), color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart.configure_series_labels().border_style(BLACK).draw()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splits::sample_weights;

    /// Pixels of the PNG that are near `colour` (RGB, each channel within 40).
    fn pixels_near(png: &Path, colour: [u8; 3]) -> usize {
        let image = image::open(png).unwrap().to_rgb8();
        image.pixels().filter(|p| p.0.iter().zip(colour).all(|(&a, b)| a.abs_diff(b) < 40)).count()
    }

    #[test]
    fn figures_are_written_as_svg_and_png_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let labels: Vec<ImageLabel> = (0..40u32)
            .map(|i| {
                let mut counts = [0; 10];
                counts[(i % 7) as usize + 1] = 10;
                ImageLabel { id: u64::from(i), counts }
            })
            .collect();
        let refs: Vec<&ImageLabel> = labels.iter().collect();
        let sets = vec![("all".to_string(), refs.clone()), ("train".to_string(), refs[..30].to_vec())];
        let [svg, png] = save(&ScoreDistributions(&sets), &dir.path().join("score_distributions")).unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("train (30)"));
        let (width, height) = image::image_dimensions(&png).unwrap();
        assert_eq!((width, height), (720, 320));
        // Bars in the blue of the figure, and dark text/axes (the caption and tick labels need the font).
        assert!(pixels_near(&png, [102, 102, 255]) > 500, "no bars drawn");
        assert!(pixels_near(&png, [0, 0, 0]) > 1000, "no text or axes drawn");

        let scores: Vec<f32> = labels.iter().map(|l| l.mean()).collect();
        let [_, png] = save(&SampleWeightsFigure(&sample_weights(&scores, 90, None)), &dir.path().join("weights")).unwrap();
        assert!(pixels_near(&png, [255, 102, 102]) > 500, "no weight bars drawn");
    }

    #[test]
    fn empty_plots_are_drawn_with_a_fixed_axis_instead_of_looping() {
        let dir = tempfile::tempdir().unwrap();
        let [svg, png] = save(&SampleWeightsFigure(&sample_weights(&[], 90, None)), &dir.path().join("weights")).unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("no training scores"));
        assert_eq!(pixels_near(&png, [255, 102, 102]), 0, "bars drawn without weights");
        let sets = vec![("train".to_string(), Vec::new())];
        let [svg, _] = save(&ScoreDistributions(&sets), &dir.path().join("scores")).unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("train (0)"));
    }

    #[test]
    fn an_infinite_or_nan_mse_is_left_out_of_the_figure_instead_of_stretching_its_axis() {
        // A model whose activations overflow predicts ±inf or NaN: its bins' MSE is not a number.
        let dir = tempfile::tempdir().unwrap();
        let metrics = crate::eval::Metrics { mse_by_score: vec![(4.0, 3, f64::INFINITY), (4.5, 2, 0.3), (5.0, 2, f64::NAN)], ..Default::default() };
        let sets = vec![("all".to_string(), metrics)];
        let [svg, _] = save(&MseByScore(&sets), &dir.path().join("mse")).unwrap();
        let svg = std::fs::read_to_string(&svg).unwrap();
        // The axis is scaled to the finite 0.3, not to infinity.
        let labels: Vec<f64> = svg.lines().filter_map(|line| line.trim().parse().ok()).collect();
        assert!(labels.contains(&0.3) && labels.iter().all(|v| *v <= 10.0), "axis labels {labels:?}");
    }
}

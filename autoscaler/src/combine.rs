//! The order of one decision (DESIGN.md, "Autoscaling beyond the KPA"): the reactive figure
//! (KPA or HPA) → raised to the forecast for predictive Revisions (a forecast never lowers
//! it) → while a scheduled window is in force its `minScale`/`maxScale` replace the
//! Revision's `min-scale`/`max-scale` → clamped by those bounds. The last step — at idle,
//! the reserved floor instead of zero — follows the scale-to-zero rule
//! ([`crate::reserve_step`]).
//!
//! When bounds contradict (a window's `minScale` above the Revision's own `max-scale`),
//! `max` wins: a cap stays a cap.

use crate::schedule::WindowInForce;

/// The bounds one decision was clamped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// The least instances.
    pub min: u32,
    /// The most instances (0 = unlimited).
    pub max: u32,
    /// The scheduled window they came from (its index in `scale-bounds`), if any.
    pub window: Option<usize>,
}

/// Each step's figure, for `sluice status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Steps {
    /// The KPA's (or HPA's) figure.
    pub reactive: u32,
    /// The forecast in instances (predictive Revisions with a forecast).
    pub forecast: Option<u32>,
    /// The reactive figure raised to the forecast.
    pub raised: u32,
    /// The bounds in force.
    pub bounds: Bounds,
    /// The figure clamped by the bounds.
    pub clamped: u32,
}

/// Combines one decision's figures. `own` is the Revision's `(min-scale, max-scale)`;
/// `min` holds only while the Revision is `reachable` (as upstream), but never below
/// `at_least` (1 for the HPA class, which does not scale to zero).
pub fn combine(
    reactive: u32,
    forecast: Option<u32>,
    own: (u32, u32),
    window: Option<WindowInForce>,
    reachable: bool,
    at_least: u32,
) -> Steps {
    let raised = forecast.map_or(reactive, |f| reactive.max(f));
    let (mut min, mut max) = own;
    if let Some(w) = window {
        min = w.min_scale.unwrap_or(min);
        max = w.max_scale.unwrap_or(max);
    }
    if !reachable {
        min = 0;
    }
    let min = min.max(at_least);
    let mut clamped = raised.max(min);
    if max != 0 {
        clamped = clamped.min(max);
    }
    Steps {
        reactive,
        forecast,
        raised,
        bounds: Bounds {
            min,
            max,
            window: window.map(|w| w.index),
        },
        clamped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(min: Option<u32>, max: Option<u32>) -> Option<WindowInForce> {
        Some(WindowInForce {
            index: 1,
            min_scale: min,
            max_scale: max,
        })
    }

    #[test]
    fn reactive_alone_is_clamped_by_the_revision_bounds() {
        let s = combine(7, None, (2, 5), None, true, 0);
        assert_eq!((s.reactive, s.raised, s.clamped), (7, 7, 5));
        assert_eq!(
            s.bounds,
            Bounds {
                min: 2,
                max: 5,
                window: None
            }
        );
        assert_eq!(combine(0, None, (2, 0), None, true, 0).clamped, 2);
        assert_eq!(
            combine(0, None, (2, 0), None, false, 0).clamped,
            0,
            "unreachable"
        );
    }

    #[test]
    fn a_forecast_raises_but_never_lowers() {
        let s = combine(3, Some(6), (0, 0), None, true, 0);
        assert_eq!((s.forecast, s.raised, s.clamped), (Some(6), 6, 6));
        let s = combine(3, Some(1), (0, 0), None, true, 0);
        assert_eq!(s.raised, 3);
        // The forecast is still capped by max-scale.
        assert_eq!(combine(3, Some(60), (0, 10), None, true, 0).clamped, 10);
    }

    #[test]
    fn a_window_replaces_the_bounds_it_sets() {
        let s = combine(1, None, (0, 3), window(Some(5), Some(50)), true, 0);
        assert_eq!(
            s.bounds,
            Bounds {
                min: 5,
                max: 50,
                window: Some(1)
            }
        );
        assert_eq!(s.clamped, 5);
        // A window may also lower max-scale.
        assert_eq!(
            combine(9, None, (0, 20), window(None, Some(4)), true, 0).clamped,
            4
        );
        // It keeps what it leaves out; a cap stays a cap.
        let s = combine(1, None, (0, 3), window(Some(5), None), true, 0);
        assert_eq!((s.bounds.min, s.bounds.max, s.clamped), (5, 3, 3));
        // A window's minimum, like min-scale, needs the Revision to be reachable.
        assert_eq!(
            combine(0, None, (0, 0), window(Some(5), None), false, 0).clamped,
            0
        );
    }

    #[test]
    fn the_order_is_forecast_then_window_then_clamp() {
        // Reactive 2, forecast 8, window 4..6: raised to 8, clamped to 6.
        let s = combine(2, Some(8), (1, 10), window(Some(4), Some(6)), true, 0);
        assert_eq!((s.reactive, s.raised, s.clamped), (2, 8, 6));
        // The HPA class never goes below one.
        assert_eq!(combine(0, None, (0, 0), None, false, 1).clamped, 1);
    }
}

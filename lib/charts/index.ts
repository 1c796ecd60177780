/** Charts for the notebooks: Vega-Lite specs, headless rendering to SVG/PNG, and tslab display. */
export {
  VEGA_LITE_SCHEMA,
  trainingCurves,
  imagesPerClass,
  confusionMatrix,
  predictionProbabilities,
  learningRateCurve,
} from './specs';
export type { VegaLiteSpec, MetricsLine, PerClassCounts } from './specs';
export { compileVegaLite, renderSvg, renderPng } from './render';
export { VEGA_LITE_MIME, chartBundle, chartDisplay, describeChart, showChart, liveChart, sendDisplay } from './display';
export type { ChartBundleOptions, DisplayBundle, LiveChart } from './display';
export { perClassTable, precisionRecallCurves, mistakesGallery } from './evaluation-specs';
export type { PerClassRow, CurveInput, GalleryItem } from './evaluation-specs';

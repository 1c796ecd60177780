/**
 * Everything the notebooks call, from one module: `import * as ic from "../dist/lib/notebook";`
 * (tslab compiles a cell's import to require(), resolved from the notebook's folder). Notebook cells
 * stay one or two calls and a display; what a step does beyond that lives in lib/steps/ and is
 * tested there. Names that clash between modules get a prefix here (formatDatasetSummary,
 * formatModelSummary).
 */
export { UserError } from './errors';
export { joinPath, resolvePath, exists, readText, isGcsPath } from './storage';

// Section 1: the data set.
export { makeDataset, summarize, readLabeledCsv, readLabels, formatSummary as formatDatasetSummary } from './dataset';
export { createDataset, showDataset, sampleImages, headLines } from './steps/data';
export { imageGrid } from './image-grid';

// Section 2: the service account (gcp) or the machine (local).
export { serviceAccountCommands, formatCommands } from './cloud/service-account';
export { serviceAccountCommandsFor, setUpAccess } from './steps/access';
export { checkLocalPrerequisites, formatChecks } from './prerequisites';

// Section 3: the trainer.
export { buildResNet, modelSummary, formatSummary as formatModelSummary } from './model';
export { learningRate } from './train/recipe';
export { trainerPlan, trainOptions, trainCommand, learningRatePoints, classCount } from './steps/trainer';

// Sections 4 and 5: preprocessing.
export { preprocess } from './preprocess';
export {
  preprocessWithProgress,
  writeSampleDataset,
  preprocessSample,
  preprocessAtScale,
  recordsPerClass,
  recordsChart,
  formatPreprocessResult,
  readBackRecords,
  formatRecords,
  recordsGrid,
} from './steps/preprocess';

// Section 6: training.
export { train } from './train';
export { readMetrics } from './train/metrics';
export { trainWithLiveChart, formatTrainResult, showTrainingCurves, evaluateExport, showConfusion, tensorboardHint } from './steps/train';
export { confusionMatrixOfExport, formatConfusion } from './evaluate';
export { evaluateTrained, showEvaluation } from './steps/evaluate';
export { evaluateModel, formatEvaluation } from './evaluation/run';

// Sections 7 and 8: deploying and predicting.
export { loadExport } from './export';
export { startServer } from './serve';
export { deployLocal, undeployLocal, readDeployment } from './serve/daemon';
export { deploy, currentDeployment, formatDeployment, modelStatus, undeploy } from './steps/deploy';
export { predict, predictRequest } from './predict';
export { pickImage, predictImage, formatRequest, formatPrediction, showPrediction } from './steps/predict';

// Settings, displays, charts, and the gcp backend.
export { notebookSettings, formatSettings, workPaths } from './steps/settings';
export type { Settings, Backend } from './steps/settings';
export { showPng, showHtml } from './steps/show';
export { notebookProgress } from './notebook-progress';
export * from './charts';
export * as cloud from './cloud';

/** Section 5 on Dataflow: the pipeline, its launch request, and reading the job back. */
export * from './pipeline';
export * from './launch';
export * from './job';
export * from './report';
export * from './follow';
export * from './run';

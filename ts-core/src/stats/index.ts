// Slice statistics engine: public surface for engine/, store/, report/ and the sketch path.
export { RunStats, type RunStatsOptions } from './runstats.ts';
export { headlineMetrics, HEADLINE_METRICS } from './headline.ts';
export { SliceAccumulator } from './accumulator.ts';
export { HIST_BINS, HIST_EDGES, HIST_EXP_MAX, HIST_EXP_MIN, HIST_LAYOUT, HIST_MANT_BITS, binOf, histQuantiles } from './hist.ts';
export { SUMS_FIELDS, N_SUMS, metricsFromSums, clipBand } from './sums.ts';
export { CDF_GRID, shapeChange, attribution } from './shape.ts';
export { StatsError } from './errors.ts';

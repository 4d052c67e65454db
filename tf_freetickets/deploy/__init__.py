"""Deployment of sparse members and ensembles once they are trained.

- saved_model: a member or a whole ensemble as a SavedModel whose endpoints check their inputs
  (shape, NaN/Inf, range: one contract for every SavedModel written; `export_member`,
  `export_ensemble`; `EnsembleModel.export` calls the latter).
- tflite: TFLite flatbuffers with sparse weight encoding, and their interpreter helpers
  (`export_tflite`, `tflite_predict`, `tflite_function`, `sparse_tensors`, `tflite_latency`).
- csr: batch-1 serving of Dense-layer tickets and ensembles as scipy CSR products (`CSRPredictor`).
- chain: the layer-chain check both serving paths outside Keras (csr, fused) share.
- compact, compact_graph, compact_decide: a ticket as a physically smaller plain Keras model, its dead
  and unread units and channels removed and their constants folded into the next biases or, before a
  "same"-padded convolution, one carrier channel or an offset map after it (`compact`, also `tft.compact`; `compact_graph` holds
  the graph analysis and the supported-layer rules, `compact_decide` what goes).
- fused: an ensemble of M MLP tickets served as one computation over the union of their supports,
  M values per index, numba kernels for one example and for batches (`FusedMLPEnsemble`; fused_kernels).
- stacked: M CNN members (any widths, e.g. compacted tickets) as ONE plain Keras Functional model, mean
  probability output, one SavedModel via `export_member` (`stack_ensemble`).
- grouped: M members of ONE CNN architecture as one model of grouped layers (the first Conv2D fused over
  the shared input, Conv2D(groups=M) after it, per-member EinsumDense heads; `group_ensemble`).
- run_export: what `python -m tf_freetickets.export_main` runs (a run's members to SavedModels,
  reload checked), and the source and output checks it shares with `evaluate`.

The submodules are imported on demand: importing this package imports none of them (csr needs scipy,
fused numba); `import tf_freetickets` imports `compact` (Keras and numpy only) for `tft.compact`.
"""

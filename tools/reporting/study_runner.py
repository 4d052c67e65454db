"""Runs a study's cells for every seed, resumably, into one JSON of records.

Each (cell, seed) trains with `experiments.runner.run` in
WORKDIR/<cell>/seed_<seed>/ and is evaluated on the test set, the offline OoD
sets and the corruptions; its record.json there also holds the command that
reruns it alone. A record already in the workdir, or in the JSON for the same
study settings, cell definition and package version, is not run again, so a
study longer than one machine's life resumes from the committed JSON. A
composed cell (`Cell.composed_of`) trains nothing: it evaluates the
mean-probability ensemble of its source cell's runs.
"""

import json
import os
import re
import time

from reporting.environment import cpu_model, environment
from reporting.results_page import UNRECORDED_CPU
from reporting.study import cell_config, rerun_command
from reporting.study_records import (
    composed_results,
    composed_timing,
    fit_measures,
    flatten_results,
    run_timing,
    structure_measures,
    validation_split,
)


def cell_dicts(cells):
    """The JSON form of `cells`; replicas / composition appear only where a cell uses them."""
    out = []
    for c in cells:
        entry = {"name": c.name, "family": c.family, "sparsity": c.sparsity, "config_file": c.config_file,
                 "overrides": list(c.overrides)}  # fmt: skip
        if c.replicas != 1:
            entry["replicas"] = c.replicas
        if c.composed_of:
            entry["composed_of"], entry["members"] = c.composed_of, c.members
        out.append(entry)
    return out


class StudyRunner:
    """Trains and evaluates every (cell, seed) of a study; see the module docstring.

    Args:
      cells: list of `Cell`; a composed cell after its source cell.
      seeds: study seeds; a cell runs `cell.run_seeds(s)` for each.
      header: the study's settings (package version, dataset, epochs, ...);
        the JSON's "study" is this dict plus "cells", and committed records
        are reused only when every setting but the seeds is the same.
      workdir: folder of the runs.
      json_path: the study JSON, rewritten after every record.
      root: folder the cells' config files are relative to.
      extra_overrides: overrides applied to every cell after its own.
      ood_examples: images per OoD set.
      corruption_examples: test images corrupted (the first N).
      fit_measures: also record the ensemble's accuracy / NLL / ECE on its
        clean training subset ("train_*") and, where the config holds out
        validation examples, on them ("val_*").
      structure_measures: also record the dead-unit fraction of sparse
        members and the parameter fraction `tft.compact` keeps
        (`study_records.structure_measures`; the structured-DST study).
    """

    def __init__(self, cells, seeds, header, workdir, json_path, root=".", extra_overrides=(), ood_examples=1000,
                 corruption_examples=1000, fit_measures=False, structure_measures=False):  # fmt: skip
        self.cells = list(cells)
        self.by_name = {c.name: c for c in self.cells}
        for cell in self.cells:
            if cell.composed_of and cell.composed_of not in self.by_name:
                raise ValueError(f"Cell {cell.name!r} is composed of {cell.composed_of!r}, which is not in the study.")
        self.seeds = [int(s) for s in seeds]
        self.header = dict(header)
        self.workdir, self.json_path, self.root = workdir, json_path, root
        self.extra_overrides = list(extra_overrides)
        self.ood_examples, self.corruption_examples = ood_examples, corruption_examples
        self.fit_measures = fit_measures
        self.structure_measures = structure_measures

    def study(self):
        """The "study" entry of the JSON: the header, the seeds and the cells."""
        return {**self.header, "seeds": self.seeds, "cells": cell_dicts(self.cells)}

    def _committed_payload(self):
        """The JSON's payload when it was written with these settings (seeds and cells aside), else None."""
        if not os.path.exists(self.json_path):
            return None
        with open(self.json_path) as f:
            payload = json.load(f)
        old, new = payload.get("study", {}), self.study()
        settings = set(new) - {"cells", "seeds"}
        if set(old) - {"cells", "seeds"} != settings or any(old[k] != new[k] for k in settings):
            return None
        return payload

    def records_outside_plan(self):
        """(cell definitions, records, seeds) of the JSON to keep beside this run's: what it does not redo.

        A run of some cells or seeds (`--cells`, `--seeds`) thus adds to the
        JSON instead of dropping what earlier runs committed; a cell this run
        redefines loses its old records. The definitions are all the JSON's
        (in its order), so the rewritten JSON keeps its cells' order.
        """
        payload = self._committed_payload()
        if payload is None:
            return [], [], []
        current = {c["name"] for c in cell_dicts(self.cells)}
        planned = {(cell.name, seed) for cell, seed in self.plan()}
        definitions = {c["name"]: c for c in payload["study"].get("cells", [])}
        committed = self.committed_records()
        kept_names = {name for name in definitions if name not in current}
        kept = [
            r for r in payload.get("records", [])
            if (r["cell"], r["seed"]) not in planned
            and (r["cell"] in kept_names or (r["cell"], r["seed"]) in committed)
        ]  # fmt: skip
        if not kept:
            return [], [], []
        return list(definitions.values()), kept, payload["study"].get("seeds", [])

    def plan(self):
        """[(cell, run seed)] in order: seed-major, so a full table exists early; sources before ensembles."""
        order = []
        for seed in self.seeds:
            for cell in self.cells:
                order += [(cell, seed)] if cell.composed_of else [(cell, s) for s in cell.run_seeds(seed)]
        return order

    def committed_records(self):
        """Records of the JSON made by this very study (same settings and cell definitions), by (cell, seed)."""
        payload = self._committed_payload()
        if payload is None:
            return {}
        definitions = {c["name"]: c for c in payload["study"].get("cells", [])}
        current = {c["name"]: c for c in self.study()["cells"]}
        return {
            (r["cell"], r["seed"]): r
            for r in payload.get("records", [])
            if definitions.get(r["cell"]) is not None and definitions[r["cell"]] == current.get(r["cell"])
        }

    def write_json(self, records, kept_cells=(), kept_records=(), kept_seeds=()):
        """Writes the JSON atomically: the kept records of earlier runs, then this run's (cells merged in order)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.json_path)), exist_ok=True)
        study = self.study()
        current = {c["name"]: c for c in study["cells"]}
        old_names = [c["name"] for c in kept_cells]
        study["cells"] = [current.get(c["name"], c) for c in kept_cells] + [
            c for c in study["cells"] if c["name"] not in old_names
        ]
        study["seeds"] = list(kept_seeds) + [s for s in self.seeds if s not in kept_seeds]
        payload = {"study": study, "environment": environment(), "records": list(kept_records) + list(records)}
        temporary = self.json_path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(payload, f, indent=1)
        os.replace(temporary, self.json_path)

    def run(self, say=print):
        """Runs (or reads back) every record of the plan, rewriting the JSON after each; returns the records."""
        from tf_freetickets import data
        from tf_freetickets.data.corruptions import available_corruptions
        from tf_freetickets.data.ood import ood_sets

        x_test, y_test = data.load_split(self.header.get("dataset", "fashion_mnist"), "test")
        self._test = (x_test, y_test, ood_sets(num=self.ood_examples), list(available_corruptions(x_test.shape[-1])))
        plan, committed = self.plan(), self.committed_records()
        for cell, seed, composed in self.sources_without_files(plan, committed):
            say(f"{cell.name} seed {seed} trains again: {composed} needs its model files, which this machine lacks "
                "(its committed record is replaced by the new run's)")  # fmt: skip
            del committed[(cell.name, seed)]
        kept = self.records_outside_plan()
        records, done = [], {}
        spent, ran, began = 0.0, 0, time.time()
        for index, (cell, seed) in enumerate(plan, 1):
            say(f"[{index}/{len(plan)}] {cell.name} seed {seed}")
            start = time.time()
            record = committed.get((cell.name, seed)) or self._record(cell, seed, done)
            trained = time.time() - start > 5  # not read back from the JSON or a workdir record
            if not trained and self.structure_measures:
                record = self._with_current_structure(cell, seed, record)
            if trained:
                spent, ran = spent + time.time() - start, ran + 1
            done[(cell.name, seed)] = record
            records.append(record)
            # Committed records the plan reaches later stay in the JSON meanwhile (a kill loses none).
            later = [committed[(c.name, s)] for c, s in plan[index:] if (c.name, s) in committed]
            self.write_json(records + later, *kept)
            left = (len(plan) - index) * (spent / ran) if ran else 0.0
            m = record["metrics"]
            notes = ([] if trained else ["read back"]) + (
                [f"{(time.time() - began) / 60:.1f} min so far, about {left / 60:.0f} min left"] if ran else []
            )
            progress = "; ".join(notes)
            say(
                f"[{index}/{len(plan)}] {cell.name} seed {seed}: accuracy {m['accuracy']:.4f} ECE {m['ece']:.4f} "
                f"OoD AUROC {m['ood_auroc']:.4f} corruption accuracy {m['corruption_accuracy']:.4f}; {progress}"
            )
        return records

    def _record(self, cell, seed, done):
        from tf_freetickets.experiments import runner as experiment
        from tf_freetickets.experiments.evaluation import members_source

        workdir = os.path.join(self.workdir, cell.name, f"seed_{seed}")
        record_file = os.path.join(workdir, "record.json")
        command = self._command(cell, seed, workdir)
        if os.path.exists(record_file):
            return self._read_back(record_file, command)
        start = time.time()
        if cell.composed_of:
            source = self.by_name[cell.composed_of]
            parts = [done[(source.name, s)] for s in cell.run_seeds(seed)]
            paths = [p for s in cell.run_seeds(seed) for p in self._member_files(source, s)]
            results = composed_results(parts, paths)
            config = cell_config(source, seed, self.root, self.extra_overrides)
            timing = composed_timing(parts)
            cpu = " + ".join(sorted({p.get("cpu") or UNRECORDED_CPU for p in parts}))
        else:
            config = cell_config(cell, seed, self.root, self.extra_overrides)
            results = experiment.run(config, workdir)
            paths = members_source(workdir)
            timing = run_timing(results, time.time() - start)
            cpu = cpu_model()
        evaluated = time.time()
        metrics = self._evaluate(results, paths, config)
        record = {
            "cell": cell.name,
            "family": cell.family,
            "sparsity": cell.sparsity,
            "seed": seed,
            "command": command,
            **timing,
            "eval_seconds": time.time() - evaluated,
            "cpu": cpu,
            **metrics,
        }
        if cell.composed_of:
            record["member_seeds"] = cell.run_seeds(seed)
        record["settings"] = self._settings()
        os.makedirs(workdir, exist_ok=True)
        with open(record_file, "w") as f:
            json.dump(record, f, indent=2)
        return record

    def _with_current_structure(self, cell, seed, record):
        """`record` with its structure measures recomputed by this version's `tft.compact`.

        They are a function of the saved tickets and of `compact` alone, so a record read back
        carries what the current `compact` keeps, not what an older one did (the study's package
        version does not change with `compact`). Where the model files are not on this machine
        the stored values stay, and the record says so ("structure_measured_by": "record").
        """
        runs = [(self.by_name[cell.composed_of], s) for s in cell.run_seeds(seed)] if cell.composed_of else [(cell, seed)]
        if not all(self._has_member_files(c, s) for c, s in runs):
            return {**record, "structure_measured_by": "record"}
        from tf_freetickets.ensembles import EnsembleModel

        members = EnsembleModel.from_saved_models([p for c, s in runs for p in self._member_files(c, s)]).members
        return {**record, "metrics": {**record["metrics"], **structure_measures(members)},
                "structure_measured_by": "current compact"}  # fmt: skip

    def _command(self, cell, seed, workdir):
        """The command that trains (cell, seed) alone; a composed cell's names its source's runs as one ensemble."""
        if not cell.composed_of:
            return rerun_command(cell, seed, workdir, self.extra_overrides)
        source = self.by_name[cell.composed_of]
        return rerun_command(source, seed, workdir, self.extra_overrides).replace(
            " --workdir=", f" --config.ensemble.kind=independent --config.ensemble.num_members={cell.members} --workdir="
        )

    def _settings(self):
        """The study settings a record depends on (the header; the seeds and cells are the record's own)."""
        return {k: v for k, v in self.header.items() if k not in ("seeds", "cells")}

    def _read_back(self, record_file, command):
        """The record a run left in its workdir, if this very study made it; else a ValueError (never reused silently)."""
        with open(record_file) as f:
            record = json.load(f)
        settings = record.get("settings", self._settings())  # records of older versions carry only the command

        def without_workdir(text):  # the same run may be reached through another spelling of the folder
            return re.sub(r" --workdir=\S+", "", text or "")

        if without_workdir(record.get("command")) != without_workdir(command) or settings != self._settings():
            raise ValueError(
                f"{record_file} was made by another run: its command {record.get('command')!r} and settings "
                f"{settings} differ from this study's {command!r} and {self._settings()}. Use another --workdir, "
                "or move that folder away to train the run again."
            )
        return record

    def sources_without_files(self, plan, committed):
        """[(source cell, run seed, "composed seed s")] to train again before a composed row can be evaluated.

        A composed row not yet committed averages its source runs' model
        files; a source record read back from the JSON (trained on another
        machine) has none here, so that run must train again.
        """
        missing = []
        for cell, seed in plan:
            if not cell.composed_of or (cell.name, seed) in committed:
                continue
            source = self.by_name[cell.composed_of]
            for run_seed in cell.run_seeds(seed):
                listed = any(m[0] is source and m[1] == run_seed for m in missing)
                if (source.name, run_seed) in committed and not listed and not self._has_member_files(source, run_seed):
                    missing.append((source, run_seed, f"{cell.name} seed {seed}"))
        return missing

    def _run_dir(self, cell, seed):
        return os.path.join(self.workdir, cell.name, f"seed_{seed}")

    def _has_member_files(self, cell, seed):
        from tf_freetickets.experiments.workdir import MANIFEST_NAME, is_run_workdir

        run_dir = self._run_dir(cell, seed)
        return is_run_workdir(run_dir) and os.path.isfile(os.path.join(run_dir, "members", MANIFEST_NAME))

    def _member_files(self, cell, seed):
        """The member files of the finished run (cell, seed); a clear error where the run left none."""
        from tf_freetickets.experiments.evaluation import members_source

        if not self._has_member_files(cell, seed):
            raise FileNotFoundError(
                f"{cell.name} seed {seed} has no finished run in {self._run_dir(cell, seed)} (no members/manifest.json); "
                "a composed row needs its model files: run that cell and seed on this machine first."
            )
        return members_source(self._run_dir(cell, seed))

    def _evaluate(self, results, paths, config):
        from tf_freetickets.ensembles import EnsembleModel
        from tf_freetickets.experiments.evaluation import evaluate_members

        x_test, y_test, ood, corruptions = self._test
        members = EnsembleModel.from_saved_models(paths).members
        evaluation = evaluate_members(members, x_test, y_test, ood_sets=ood, validation=validation_split(config))
        n = self.corruption_examples
        corrupted = evaluate_members(members, x_test[:n], y_test[:n], corruptions=corruptions)
        metrics = flatten_results({**evaluation, **results}, evaluation, corrupted)  # composed rows: figures of the evaluation
        if self.fit_measures:
            metrics.update(fit_measures(members, config))
        if self.structure_measures:
            metrics.update(structure_measures(members))
        return {
            "metrics": metrics,
            "reliability": evaluation["reliability"],
            "ood": evaluation["ood"],
            "corruption": corrupted["corruption"],
        }

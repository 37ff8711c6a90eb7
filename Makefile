# Two commands on a fresh machine: `make demo` (the main job, nothing to download by hand) and
# `make test` (the suite). Both build the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install constraints weights demo demo-train demo-train-eps demo-student demo-student1 demo-ablation demo-lift demo-speaker app docs docs-build browser test test-fast bench bench-sampling-quality clean-venv

# requirements.txt says what and from which version; constraints.txt pins the exact versions the
# suite last passed with, so a fresh machine next month gets the same ones.
$(INSTALLED): requirements.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	@touch $(INSTALLED)

install: $(INSTALLED)

# Move to the newest versions requirements.txt allows: upgrade, run the whole suite on them, and
# only when it passes pin what is installed into constraints.txt (commit it with the change).
constraints: $(INSTALLED) browser
	$(PY) -m pip install --quiet --upgrade -r requirements.txt
	$(PY) -m pytest
	{ echo "# The exact versions the test suite last passed with (make constraints writes this file; make install applies it)."; \
	  $(PY) -m pip freeze --exclude-editable | LC_ALL=C sort -f; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	@touch $(INSTALLED)

# Every pretrained weight file (released checkpoint, experts, detectors, metric networks) into the
# place the code loads it from; `$(PY) -m scripts.fetch_weights --list` shows what and where.
weights: $(INSTALLED)
	$(PY) -m scripts.fetch_weights

demo: $(INSTALLED)
	$(PY) demo.py

# Reproduce the committed demo checkpoints (render, preprocess, SyncNet, Diff2Lip, export, evaluate,
# then distil and score the 2-step student).
demo-train: $(INSTALLED)
	$(PY) -m scripts.demo_train

# Only the last step: distil the committed demo network into the 2-step student and score it.
demo-student: $(INSTALLED)
	$(PY) -m scripts.demo_train --student_only True

# The 2-step student distilled to 1 step (one network pass per frame), scored like the demo
# (docs/figures.md#student1; about 13 minutes on 2 cores).
demo-student1: $(INSTALLED)
	$(PY) -m scripts.demo_train --one_step_student True

# The demo network in the released parameterization (predicts the noise, learned sigma), fine-tuned
# from the committed one and scored with the released sampler's DDIM-25.
demo-train-eps: $(INSTALLED)
	$(PY) -m scripts.demo_train --parameterization eps --timestep_respacing ddim25

# The ablation of the losses in miniature (four trainings of the demo network).
demo-ablation: $(INSTALLED)
	$(PY) -m scripts.demo_train --ablation True

# 128 px crops: the committed 64 px network upscaled, a 128 px network from scratch, and the 64 px
# network lifted to 128 px and fine-tuned (docs/resolution.md#proof; about 70 minutes on 2 cores).
demo-lift: $(INSTALLED)
	$(PY) -m scripts.demo_train --lift_proof True --timestep_respacing ddim4

# The committed network fine-tuned on one held-out speaker, scored before and after
# (docs/training.md#one-speaker; about 15 minutes on 2 cores).
demo-speaker: $(INSTALLED)
	$(PY) -m scripts.demo_train --speaker_proof True --timestep_respacing ddim4

# The web app (app.py) on http://127.0.0.1:7860.
app: $(INSTALLED)
	$(PY) app.py

# The documentation site (mkdocs.yml, docs/) on http://127.0.0.1:8000; docs-build writes it to
# site/ with --strict, as the test suite does.
docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve -a 127.0.0.1:8000

docs-build: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Debian's chromium and its driver, which the web app's browser test drives headless
# (tests/test_app_browser.py); installed only when missing, with sudo when not root. Where apt
# cannot install them (another distribution), `make test` goes on: the browser test then skips,
# except under CI, where it fails and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		{ $$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends chromium chromium-driver; } || \
		echo "make browser: could not install Debian's chromium and chromium-driver; tests/test_app_browser.py needs /usr/bin/chromium and /usr/bin/chromedriver" >&2; \
	fi

test: $(INSTALLED) browser
	$(PY) -m pytest

# Everything but the cases marked slow (CI runs them all).
test-fast: $(INSTALLED)
	$(PY) -m pytest -m "not slow"

bench: $(INSTALLED)
	$(PY) benchmarks/bench_unet.py
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_sampling.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_detect.py

# The fast samplers' quality on the synthetic benchmark, for both demo networks (about 20 minutes).
bench-sampling-quality: $(INSTALLED)
	$(PY) benchmarks/bench_sampling_quality.py --parameterization eps
	$(PY) benchmarks/bench_sampling_quality.py --parameterization x0

clean-venv:
	rm -rf $(VENV)

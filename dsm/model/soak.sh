#!/usr/bin/env bash
# make soak: the large spin configurations (4 nodes, reordering, loss, liveness under loss); see docs/dsm-model.md.
exec bash "$(dirname "$0")/check.sh" full

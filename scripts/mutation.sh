#!/usr/bin/env bash
# Mutation testing with mutmut 3 over pubsub/, protocol/, security/, audit/, durable/at_rest.py,
# the development stack's relay/access.py,
# config.py and the call's pure modules media/negotiation.py and media/common.py ([tool.mutmut] in
# pyproject.toml says what is mutated and which tests run). Slow: not in CI.
#
#   scripts/mutation.sh              fresh run of every mutant, then the killed share per module
#   scripts/mutation.sh --keep       reuse mutants/ from the last run: only changed functions and new
#                                    tests run again (a survivor stays a survivor until it is re-run)
#   scripts/mutation.sh 'telehealth_client.protocol.channels*'   re-run only the matching mutants
#   scripts/mutation.sh --summary    the table of the last run; --survivors adds each survivor's diff
#
# Per mutant, mutmut runs only the selected tests that called the mutated function in a first clean
# run, stopping at the first failure. MUTATION_CHILDREN (default 1) mutants run at once: the machine
# is shared. MUTATION_VENV (default ./.venv) is the virtualenv, e.g. the main checkout's from a
# git worktree. Results stay in mutants/ (ignored by git) for `mutmut show NAME` and `mutmut browse`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MUTATION_VENV:-.venv}
children=${MUTATION_CHILDREN:-1}
summary() { "$venv/bin/python" scripts/mutation_summary.py "$@"; }

case "${1:-}" in
--summary) summary; exit ;;
--survivors) summary --survivors; exit ;;
--keep) shift ;;
"") rm -rf mutants ;;  # fresh: cached verdicts would hide what new tests kill
*) ;;                  # named mutants: re-run those on top of the last results
esac

start=$SECONDS
status=0
"$venv/bin/mutmut" run --max-children "$children" "$@" || status=$?
echo "mutmut run: exit $status after $((SECONDS - start)) s"
summary
exit "$status"

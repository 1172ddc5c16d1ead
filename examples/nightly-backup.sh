#!/usr/bin/env bash
# Nightly backup of some folders into a chunkstore store: put --sync, forget, gc, verify.
#
# Settings (environment variables; the defaults are in brackets):
#   BACKUP_STORE            the store's URL: a folder or s3://BUCKET/PREFIX, made once
#                           beforehand with `chunkstore init` [$CHUNKSTORE_STORE, else
#                           /var/backups/chunkstore]
#   BACKUP_PATHS            the folders to back up, absolute, separated by ':' like PATH
#                           (so names with spaces need no quoting) [/etc:/home]
#   BACKUP_PASSPHRASE_FILE  the passphrase or key file of an encrypted store [none;
#                           chunkstore then takes $CHUNKSTORE_PASSPHRASE if it is set]
#   BACKUP_FORGET           the keep rules given to `chunkstore forget` for each folder;
#                           set it empty to keep every version
#                           [--keep-daily 7 --keep-weekly 4 --keep-monthly 12]
#   BACKUP_VERIFY_SUBSET    the percentage of the stored chunks that verify reads back and
#                           re-hashes, chosen at random each night; 0 checks the catalog
#                           and that every chunk exists without reading any [5]
#   BACKUP_LOG              the log file, appended to [/var/log/chunkstore-backup.log]
#   BACKUP_LOCK             the lock file [/run/lock/chunkstore-backup.lock]
# `chunkstore` and `flock` are found on PATH; CHUNKSTORE_CONCURRENCY and the AWS settings
# (AWS_PROFILE, AWS_REGION...) are passed on to chunkstore as they are.
#
# Steps: put --sync of the folders; if it succeeded, forget with the keep rules for each
# folder, then gc; verify in every case. A put that failed (even one that only skipped an
# unreadable file) holds back forget and gc, so that nothing is removed from the store
# while its backups are not being taken; verify still runs, because a failing store is
# exactly when its report matters.
#
# Every step ends with one timestamped log line, "STEP ok in S s" or "STEP failed in S s:
# exit N, MEANING: chunkstore's last error line". Those lines also go to stdout (ok) and stderr
# (failed), so cron mails only failures when stdout is sent to /dev/null; what chunkstore
# itself printed goes to the log only, indented under the step.
#
# Exit status: 0 when every step succeeded; otherwise the highest status of the failed
# steps, which keeps chunkstore's meanings (1 error, 2 usage, 3 not found, 4 integrity
# error, 5 wrong key or passphrase, 130 interrupted); 75 when another run holds the lock
# and this one did nothing; 78 when the settings are unusable and nothing was run.
#
# Overlapping runs: a run that finds the lock taken exits at once (status 75) instead of
# waiting. A run still going at the next night's start means something is slow or stuck;
# waiting runs would queue behind it and start at unpredictable hours, and the next run
# that gets the lock catches up anyway, because put only reads what changed.

set -euo pipefail

readonly EXIT_LOCKED=75     # EX_TEMPFAIL in sysexits.h: try again later
readonly EXIT_SETTINGS=78   # EX_CONFIG in sysexits.h

BACKUP_STORE=${BACKUP_STORE:-${CHUNKSTORE_STORE:-/var/backups/chunkstore}}
BACKUP_PATHS=${BACKUP_PATHS:-/etc:/home}
BACKUP_PASSPHRASE_FILE=${BACKUP_PASSPHRASE_FILE:-}
BACKUP_FORGET=${BACKUP_FORGET---keep-daily 7 --keep-weekly 4 --keep-monthly 12}
BACKUP_VERIFY_SUBSET=${BACKUP_VERIFY_SUBSET:-5}
BACKUP_LOG=${BACKUP_LOG:-/var/log/chunkstore-backup.log}
BACKUP_LOCK=${BACKUP_LOCK:-/run/lock/chunkstore-backup.lock}

final_status=0  # the highest exit status of the steps so far
step_status=0   # the exit status of the last step

log_line() {
    printf '%s chunkstore-backup[%d]: %s\n' "$(date +%Y-%m-%dT%H:%M:%S%z)" "$$" "$*"
}

log() {
    local line
    line=$(log_line "$@")
    printf '%s\n' "$line" >>"$BACKUP_LOG"
    printf '%s\n' "$line"
}

log_failure() {
    local line
    line=$(log_line "$@")
    printf '%s\n' "$line" >>"$BACKUP_LOG"
    printf '%s\n' "$line" >&2
}

settings_error() {
    # The log may be what is wrong, so this goes to stderr first and to the log if it can.
    log_line "settings: $*" >&2
    log_line "settings: $*" 2>/dev/null >>"$BACKUP_LOG" || true
    exit "$EXIT_SETTINGS"
}

# What an exit status of chunkstore means (cli/main.py and chunkstore/errors.py).
describe_status() {
    case $1 in
        1) echo "error" ;;
        2) echo "usage error (a setting chunkstore refused)" ;;
        3) echo "not found" ;;
        4) echo "integrity error (corrupt, missing or mismatched data)" ;;
        5) echo "wrong key or passphrase" ;;
        126 | 127) echo "chunkstore could not be started" ;;
        130) echo "interrupted" ;;
        *)
            if (($1 > 128)); then
                echo "killed by signal $(($1 - 128))"
            else
                echo "unexpected status"
            fi
            ;;
    esac
}

# run_step STEP OUTPUT ARGUMENT...: run `chunkstore ARGUMENT...` and log how STEP ended.
# OUTPUT says what chunkstore printed goes to the log: "all", or "last" for its last line
# only when it succeeds (forget lists every version it keeps: 100,000 lines a night for
# a folder of 100,000 files). Sets step_status and raises final_status.
run_step() {
    local step=$1 output=$2
    shift 2
    local started=$SECONDS reason
    step_status=0
    # stdin is /dev/null so that a missing passphrase fails (exit 5) instead of waiting
    # for an answer at a terminal nobody watches.
    chunkstore "${chunkstore_options[@]}" "$@" </dev/null >"$step_output" 2>&1 || step_status=$?
    if ((step_status == 0)) && [[ $output == last ]]; then
        tail -n 1 "$step_output" | sed 's/^/    /' >>"$BACKUP_LOG"
    else
        sed 's/^/    /' "$step_output" >>"$BACKUP_LOG"
    fi
    if ((step_status == 0)); then
        log "$step ok in $((SECONDS - started)) s"
        return
    fi
    # chunkstore's own errors start with "chunkstore:"; click's usage errors with "Error:".
    reason=$(grep -E '^(chunkstore|Error):' "$step_output" | tail -n 1 || true)
    log_failure "$step failed in $((SECONDS - started)) s: exit $step_status, $(describe_status "$step_status")${reason:+: $reason}"
    if ((step_status > final_status)); then
        final_status=$step_status
    fi
}

# ---- settings ----------------------------------------------------------------------------

if ! { : >>"$BACKUP_LOG"; } 2>/dev/null; then
    settings_error "cannot write the log file $BACKUP_LOG (set BACKUP_LOG)"
fi
command -v chunkstore >/dev/null || settings_error "chunkstore is not on PATH ($PATH)"
command -v flock >/dev/null || settings_error "flock (util-linux) is not on PATH ($PATH)"

folders=()
IFS=: read -r -a listed_folders <<<"$BACKUP_PATHS"
for folder in "${listed_folders[@]}"; do
    [[ -n $folder ]] || continue
    # Stored names come from the paths as given, and cron and systemd start in different
    # folders: a relative path would be stored under a name that depends on which ran it.
    [[ $folder == /* ]] || settings_error "BACKUP_PATHS: $folder is not an absolute path"
    folders+=("$folder")
done
((${#folders[@]} > 0)) || settings_error "BACKUP_PATHS names no folder"

read -r -a forget_options <<<"$BACKUP_FORGET"

chunkstore_options=(--store "$BACKUP_STORE")
if [[ -n $BACKUP_PASSPHRASE_FILE ]]; then
    chunkstore_options+=(--passphrase-file "$BACKUP_PASSPHRASE_FILE")
fi

if [[ $BACKUP_VERIFY_SUBSET == 0 ]]; then
    verify_options=()
else
    verify_options=(--read-data --subset "$BACKUP_VERIFY_SUBSET")
fi

# ---- the lock ----------------------------------------------------------------------------

# The lock is held through this descriptor until the script exits; chunkstore inherits it,
# so a step that outlives a killed script still keeps the next run out.
if ! { exec {lock_fd}>>"$BACKUP_LOCK"; } 2>/dev/null; then
    settings_error "cannot open the lock file $BACKUP_LOCK (set BACKUP_LOCK)"
fi
if ! flock --nonblock "$lock_fd"; then
    log_failure "another backup holds the lock $BACKUP_LOCK; this run does nothing and exits $EXIT_LOCKED"
    exit "$EXIT_LOCKED"
fi

step_output=$(mktemp)
trap 'rm -f "$step_output"' EXIT

# ---- the steps ---------------------------------------------------------------------------

log "backup of ${folders[*]} into $BACKUP_STORE started"

run_step put all put --sync "${folders[@]}"
if ((step_status == 0)); then
    if ((${#forget_options[@]} > 0)); then
        for folder in "${folders[@]}"; do
            run_step "forget $folder" last forget "$folder" "${forget_options[@]}"
        done
    fi
    # gc is safe whatever forget did: it frees only chunks that no version references.
    run_step gc all gc
else
    log_failure "forget and gc skipped: nothing is removed from the store after a failed put"
fi
run_step verify all verify "${verify_options[@]}"

if ((final_status == 0)); then
    log "backup finished: every step succeeded"
else
    log_failure "backup finished with exit status $final_status: see the failed steps above"
fi
exit "$final_status"

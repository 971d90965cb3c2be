#!/usr/bin/env bash
# A "remote cluster" on this machine for tests and demos, as root on Debian 12 without systemd; idempotent:
#   munge + single-node Slurm (slurmctld and slurmd, no cgroups, no accounting, partition `debug`), and
#   sshd on 127.0.0.1:$SSH_PORT with a cluster user $CLUSTER_USER reached by key, plus a `Host localcluster` entry
#   in root's ~/.ssh/config (core.ssh_async reads the host from there).
# CLUSTER_USER defaults to root because the project's virtual environment (with `annpot`) lives under /root here,
# which other users cannot enter; set CLUSTER_USER=aiida for a separate account where the engine is installed for it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SSH_PORT=${SSH_PORT:-2222}
CLUSTER_USER=${CLUSTER_USER:-root}
KEY=${SSH_KEY:-$HOME/.ssh/id_ed25519_localcluster}

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || [ ! -x /usr/sbin/sshd ]; then
    # slurm-wlm would pull ~25 plugin packages; these are enough
    apt-get update -qq && apt-get install -y -qq --no-upgrade slurmctld slurmd slurm-client munge openssh-server >/dev/null
fi

# --- munge ------------------------------------------------------------------------------------------------------
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key
                                 chmod 600 /etc/munge/munge.key; }
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 20); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
fi

# --- Slurm ------------------------------------------------------------------------------------------------------
host=$(hostname -s)
cpus=$(nproc)
memory=$(awk '/MemTotal/ {printf "%d", $2/1024*0.8}' /proc/meminfo)
install -d -o slurm -g slurm /var/spool/slurmctld /var/log/slurm
install -d /var/spool/slurmd
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=localcluster
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 60); do sinfo -h -o '%T' 2>/dev/null | grep -q -E '^(idle|mixed|allocated)' && break; sleep 0.5; done
sinfo -h -o '%T' | grep -q -E '^(idle|mixed|allocated)'

# --- sshd and the cluster user ------------------------------------------------------------------------------------
ssh-keygen -A >/dev/null
install -d -m 0755 /run/sshd
cat > /etc/ssh/sshd_localcluster.conf <<CONF
Port ${SSH_PORT}
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd_localcluster.pid
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowUsers ${CLUSTER_USER}
Subsystem sftp internal-sftp
MaxStartups 100:30:200
MaxSessions 50
CONF
if [ "$CLUSTER_USER" != root ]; then
    id "$CLUSTER_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$CLUSTER_USER"
    usermod -p '*' "$CLUSTER_USER"   # useradd's '!' locks the account, and with UsePAM no sshd refuses key logins
fi
install -d -m 0700 "$HOME/.ssh"
[ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C localcluster -f "$KEY"
home=$(getent passwd "$CLUSTER_USER" | cut -d: -f6)
install -d -m 0700 -o "$CLUSTER_USER" -g "$CLUSTER_USER" "$home/.ssh"
touch "$home/.ssh/authorized_keys"
grep -qF "$(cat "$KEY.pub")" "$home/.ssh/authorized_keys" || cat "$KEY.pub" >> "$home/.ssh/authorized_keys"
chown "$CLUSTER_USER:$CLUSTER_USER" "$home/.ssh/authorized_keys" && chmod 600 "$home/.ssh/authorized_keys"
if ! { [ -f /run/sshd_localcluster.pid ] && kill -0 "$(cat /run/sshd_localcluster.pid)" 2>/dev/null; }; then
    /usr/sbin/sshd -f /etc/ssh/sshd_localcluster.conf -E /var/log/sshd_localcluster.log
fi
for _ in $(seq 1 40); do ssh-keyscan -p "$SSH_PORT" 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.25; done
touch "$HOME/.ssh/known_hosts"
ssh-keygen -R "[127.0.0.1]:$SSH_PORT" >/dev/null 2>&1 || true
ssh-keyscan -p "$SSH_PORT" -t ed25519 127.0.0.1 2>/dev/null >> "$HOME/.ssh/known_hosts"
if ! grep -q '^Host localcluster$' "$HOME/.ssh/config" 2>/dev/null; then
    printf 'Host localcluster\n  HostName 127.0.0.1\n  Port %s\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  BatchMode yes\n' \
        "$SSH_PORT" "$CLUSTER_USER" "$KEY" >> "$HOME/.ssh/config"
    chmod 600 "$HOME/.ssh/config"
fi
ssh localcluster true

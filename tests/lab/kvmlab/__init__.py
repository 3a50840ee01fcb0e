"""kvmlab: the kvm.migration test lab (systemd-nspawn hypervisor hosts and their test guest)."""

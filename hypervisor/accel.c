// SPDX-License-Identifier: MIT
/*
 * Accelerator selection: by name ("kvm", "emu"), or "auto" = kvm when its probe passes on this host, else emu
 * with the reason kvm was passed over (rackvm run prints it, so a slow run is never a mystery).
 */
#include "hypervisor/accel.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const struct accel_ops *const accels[] = { &accel_kvm_ops, &accel_emu_ops };

const struct accel_ops *accel_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < sizeof(accels) / sizeof(accels[0]); i++)
		if (!strcmp(accels[i]->name, name))
			return accels[i];
	return NULL;
}

const struct accel_ops *accel_choose(const char *name, char *why, size_t why_len)
{
	const struct accel_ops *ops;
	char reason[160];

	if (why_len)
		why[0] = '\0';
	if (name && strcmp(name, "auto")) {
		ops = accel_find(name);
		if (!ops) {
			snprintf(why, why_len, "unknown accelerator '%s' (auto, kvm, emu)", name);
			return NULL;
		}
		reason[0] = '\0';
		if (ops->probe(reason, sizeof(reason))) {
			snprintf(why, why_len, "%s", reason[0] ? reason : "not usable on this host");
			return NULL;
		}
		snprintf(why, why_len, "requested");
		return ops;
	}
	reason[0] = '\0';
	if (accel_kvm_ops.probe(reason, sizeof(reason)) == 0) {
		snprintf(why, why_len, "KVM is available");
		return &accel_kvm_ops;
	}
	snprintf(why, why_len, "kvm unusable: %s", reason[0] ? reason : "probe failed");
	reason[0] = '\0';
	if (accel_emu_ops.probe && accel_emu_ops.probe(reason, sizeof(reason))) {
		size_t n = strlen(why);

		snprintf(why + n, why_len > n ? why_len - n : 0, "; emu unusable: %s", reason);
		return NULL;
	}
	return &accel_emu_ops;
}

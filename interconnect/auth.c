/* SPDX-License-Identifier: MIT */
/* Handshake state machine and per-frame MAC; the protocol is described in interconnect/auth.h. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "interconnect/auth.h"
#include "interconnect/frame_codec.h"
#include "interconnect/ic.h"
#include "interconnect/ic_internal.h"
#include "interconnect/ic.pb-c.h"
#include "util/log.h"

/* ---- handshake ---------------------------------------------------------------------------------------- */

enum hs_state {
	HS_DIAL_START,           /* dialler, HELLO not sent yet */
	HS_DIAL_WAIT_CHALLENGE,
	HS_LISTEN_WAIT_HELLO,
	HS_LISTEN_WAIT_AUTH,
	HS_DONE,
	HS_FAILED,
};

struct ic_hs {
	enum hs_state state;
	struct ic_hs_params p;
	uint8_t key[IC_KEY_MAX];
	uint32_t id_d, id_l;
	uint8_t nonce_d[IC_NONCE_LEN], nonce_l[IC_NONCE_LEN];
	uint8_t session[IC_SESSION_KEY_LEN];
};

int ic_hs_create(const struct ic_hs_params *p, struct ic_hs **out)
{
	struct ic_hs *hs;

	*out = NULL;
	if (!p->key || p->key_len < IC_KEY_MIN || p->key_len > IC_KEY_MAX)
		return -EINVAL;
	hs = calloc(1, sizeof(*hs));
	if (!hs)
		return -ENOMEM;
	hs->p = *p;
	memcpy(hs->key, p->key, p->key_len);
	hs->p.key = hs->key;
	if (p->dialler) {
		hs->state = HS_DIAL_START;
		hs->id_d = p->self;
		hs->id_l = p->expect_peer;
	} else {
		hs->state = HS_LISTEN_WAIT_HELLO;
		hs->id_l = p->self;
	}
	*out = hs;
	return 0;
}

void ic_hs_destroy(struct ic_hs *hs)
{
	if (!hs)
		return;
	OPENSSL_cleanse(hs, sizeof(*hs));
	free(hs);
}

bool ic_hs_done(const struct ic_hs *hs)
{
	return hs->state == HS_DONE;
}

uint32_t ic_hs_peer(const struct ic_hs *hs)
{
	return hs->p.dialler ? hs->id_l : hs->id_d;
}

void ic_hs_session_key(const struct ic_hs *hs, uint8_t key[IC_SESSION_KEY_LEN])
{
	memcpy(key, hs->session, IC_SESSION_KEY_LEN);
}

/* HMAC-SHA256(K, "rackvm-ic-v1 " label || version || id_D || id_L || nonce_D || nonce_L) */
static int hs_derive(const struct ic_hs *hs, const char *label, uint8_t out[32])
{
	uint8_t msg[64 + 12 + 2 * IC_NONCE_LEN];
	size_t n = (size_t)snprintf((char *)msg, 64, "rackvm-ic-v1 %s", label);
	uint32_t v;
	unsigned int outlen = 32;

	v = htole32(IC_HS_VERSION);
	memcpy(msg + n, &v, 4);
	v = htole32(hs->id_d);
	memcpy(msg + n + 4, &v, 4);
	v = htole32(hs->id_l);
	memcpy(msg + n + 8, &v, 4);
	memcpy(msg + n + 12, hs->nonce_d, IC_NONCE_LEN);
	memcpy(msg + n + 12 + IC_NONCE_LEN, hs->nonce_l, IC_NONCE_LEN);
	n += 12 + 2 * IC_NONCE_LEN;
	if (!HMAC(EVP_sha256(), hs->key, (int)hs->p.key_len, msg, n, out, &outlen) || outlen != 32)
		return -EIO;
	return 0;
}

static int hs_fail(struct ic_hs *hs, int err, const char **why, const char *reason)
{
	hs->state = HS_FAILED;
	if (why)
		*why = reason;
	return err;
}

static bool hs_peer_allowed(const struct ic_hs *hs, uint32_t id)
{
	if (id == hs->p.self || id >= IC_MAX_NODES)
		return false;
	return hs->p.peer_ok ? hs->p.peer_ok(hs->p.opaque, id) : true;
}

int ic_hs_start(struct ic_hs *hs, struct ic_hs_msg *out)
{
	IcHello hello = IC_HELLO__INIT;

	out->type = 0;
	out->len = 0;
	if (!hs->p.dialler)
		return 0;
	if (hs->state != HS_DIAL_START)
		return -EPROTO;
	if (RAND_bytes(hs->nonce_d, IC_NONCE_LEN) != 1)
		return hs_fail(hs, -EIO, NULL, "RAND_bytes failed");
	hello.version = IC_HS_VERSION;
	hello.node_id = hs->p.self;
	hello.nonce.data = hs->nonce_d;
	hello.nonce.len = IC_NONCE_LEN;
	if (ic_hello__get_packed_size(&hello) > sizeof(out->buf))
		return hs_fail(hs, -EMSGSIZE, NULL, "HELLO too large");
	out->len = ic_hello__pack(&hello, out->buf);
	out->type = IC_T_HELLO;
	hs->state = HS_DIAL_WAIT_CHALLENGE;
	return 0;
}

static int hs_on_hello(struct ic_hs *hs, const void *payload, size_t len, struct ic_hs_msg *out, const char **why)
{
	IcChallenge ch = IC_CHALLENGE__INIT;
	uint8_t proof[IC_PROOF_LEN];
	IcHello *hello;
	int ret;

	hello = ic_hello__unpack(NULL, len, payload);
	if (!hello)
		return hs_fail(hs, -EPROTO, why, "garbled HELLO");
	if (hello->version != IC_HS_VERSION) {
		ic_hello__free_unpacked(hello, NULL);
		return hs_fail(hs, -EPROTO, why, "unsupported handshake version in HELLO");
	}
	if (hello->nonce.len != IC_NONCE_LEN) {
		ic_hello__free_unpacked(hello, NULL);
		return hs_fail(hs, -EPROTO, why, "HELLO nonce has the wrong length");
	}
	hs->id_d = hello->node_id;
	memcpy(hs->nonce_d, hello->nonce.data, IC_NONCE_LEN);
	ic_hello__free_unpacked(hello, NULL);
	if (!hs_peer_allowed(hs, hs->id_d))
		return hs_fail(hs, -EPERM, why, "HELLO from a node id that may not connect to us");

	if (RAND_bytes(hs->nonce_l, IC_NONCE_LEN) != 1)
		return hs_fail(hs, -EIO, why, "RAND_bytes failed");
	ret = hs_derive(hs, "listener", proof);
	if (ret)
		return hs_fail(hs, ret, why, "HMAC failed");
	ch.version = IC_HS_VERSION;
	ch.node_id = hs->id_l;
	ch.nonce.data = hs->nonce_l;
	ch.nonce.len = IC_NONCE_LEN;
	ch.proof.data = proof;
	ch.proof.len = IC_PROOF_LEN;
	out->len = ic_challenge__pack(&ch, out->buf);
	out->type = IC_T_CHALLENGE;
	hs->state = HS_LISTEN_WAIT_AUTH;
	return 0;
}

static int hs_on_challenge(struct ic_hs *hs, const void *payload, size_t len, struct ic_hs_msg *out,
			   const char **why)
{
	uint8_t expect[IC_PROOF_LEN], proof[IC_PROOF_LEN];
	IcAuth auth = IC_AUTH__INIT;
	IcChallenge *ch;
	int ret;

	ch = ic_challenge__unpack(NULL, len, payload);
	if (!ch)
		return hs_fail(hs, -EPROTO, why, "garbled CHALLENGE");
	if (ch->version != IC_HS_VERSION || ch->nonce.len != IC_NONCE_LEN || ch->proof.len != IC_PROOF_LEN) {
		ic_challenge__free_unpacked(ch, NULL);
		return hs_fail(hs, -EPROTO, why, "CHALLENGE with a bad version or field length");
	}
	if (ch->node_id != hs->p.expect_peer) {
		ic_challenge__free_unpacked(ch, NULL);
		return hs_fail(hs, -EPERM, why, "CHALLENGE from another node than the one dialled");
	}
	memcpy(hs->nonce_l, ch->nonce.data, IC_NONCE_LEN);
	memcpy(proof, ch->proof.data, IC_PROOF_LEN);
	ic_challenge__free_unpacked(ch, NULL);

	ret = hs_derive(hs, "listener", expect);
	if (ret)
		return hs_fail(hs, ret, why, "HMAC failed");
	if (CRYPTO_memcmp(expect, proof, IC_PROOF_LEN))
		return hs_fail(hs, -EACCES, why, "listener's proof is wrong (different cluster key?)");
	ret = hs_derive(hs, "dialler", proof);
	if (!ret)
		ret = hs_derive(hs, "session", hs->session);
	if (ret)
		return hs_fail(hs, ret, why, "HMAC failed");
	auth.proof.data = proof;
	auth.proof.len = IC_PROOF_LEN;
	out->len = ic_auth__pack(&auth, out->buf);
	out->type = IC_T_AUTH;
	hs->state = HS_DONE;
	return 1;
}

static int hs_on_auth(struct ic_hs *hs, const void *payload, size_t len, const char **why)
{
	uint8_t expect[IC_PROOF_LEN];
	IcAuth *auth;
	bool ok;
	int ret;

	auth = ic_auth__unpack(NULL, len, payload);
	if (!auth)
		return hs_fail(hs, -EPROTO, why, "garbled AUTH");
	ret = hs_derive(hs, "dialler", expect);
	if (ret) {
		ic_auth__free_unpacked(auth, NULL);
		return hs_fail(hs, ret, why, "HMAC failed");
	}
	ok = auth->proof.len == IC_PROOF_LEN && !CRYPTO_memcmp(expect, auth->proof.data, IC_PROOF_LEN);
	ic_auth__free_unpacked(auth, NULL);
	if (!ok)
		return hs_fail(hs, -EACCES, why, "dialler's proof is wrong (different cluster key or replay?)");
	ret = hs_derive(hs, "session", hs->session);
	if (ret)
		return hs_fail(hs, ret, why, "HMAC failed");
	hs->state = HS_DONE;
	return 1;
}

int ic_hs_input(struct ic_hs *hs, uint8_t type, const void *payload, size_t len, struct ic_hs_msg *out,
		const char **why)
{
	out->type = 0;
	out->len = 0;
	if (why)
		*why = NULL;
	if (len > IC_HS_MSG_MAX)
		return hs_fail(hs, -EPROTO, why, "handshake message too large");
	switch (hs->state) {
	case HS_DIAL_WAIT_CHALLENGE:
		if (type != IC_T_CHALLENGE)
			break;
		return hs_on_challenge(hs, payload, len, out, why);
	case HS_LISTEN_WAIT_HELLO:
		if (type != IC_T_HELLO)
			break;
		return hs_on_hello(hs, payload, len, out, why);
	case HS_LISTEN_WAIT_AUTH:
		if (type != IC_T_AUTH)
			break;
		return hs_on_auth(hs, payload, len, why);
	case HS_DIAL_START:
	case HS_DONE:
	case HS_FAILED:
		break;
	}
	return hs_fail(hs, -EPROTO, why, "unexpected handshake message");
}

/* ---- per-frame MAC ------------------------------------------------------------------------------------- */

struct ic_mac {
	enum ic_dir dir;
	EVP_CIPHER_CTX *gcm;     /* AES-256-GMAC (the wire MAC) */
	EVP_MAC_CTX *hmac;       /* HMAC-SHA256 (measurement only) */
};

int ic_mac_create(const uint8_t key[IC_SESSION_KEY_LEN], enum ic_dir dir, struct ic_mac **out)
{
	struct ic_mac *m;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->dir = dir;
	m->gcm = EVP_CIPHER_CTX_new();
	if (!m->gcm)
		goto out_free;
	if (EVP_EncryptInit_ex(m->gcm, EVP_aes_256_gcm(), NULL, key, NULL) != 1)
		goto out_free_ctx;
	*out = m;
	return 0;

out_free_ctx:
	EVP_CIPHER_CTX_free(m->gcm);
out_free:
	free(m);
	return -ENOMEM;
}

int ic_mac_create_hmac(const uint8_t key[IC_SESSION_KEY_LEN], enum ic_dir dir, struct ic_mac **out)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	struct ic_mac *m;
	EVP_MAC *mac;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->dir = dir;
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!mac)
		goto out_free;
	m->hmac = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac);
	if (!m->hmac)
		goto out_free;
	if (EVP_MAC_init(m->hmac, key, IC_SESSION_KEY_LEN, params) != 1)
		goto out_free_ctx;
	*out = m;
	return 0;

out_free_ctx:
	EVP_MAC_CTX_free(m->hmac);
out_free:
	free(m);
	return -ENOMEM;
}

void ic_mac_destroy(struct ic_mac *m)
{
	if (!m)
		return;
	EVP_CIPHER_CTX_free(m->gcm);
	EVP_MAC_CTX_free(m->hmac);
	free(m);
}

static int mac_hmac(struct ic_mac *m, const void *hdr, const struct iovec *iov, int iovcnt,
		    uint8_t tag[IC_TAG_LEN])
{
	uint8_t full[32], dir = (uint8_t)m->dir;
	size_t outl;

	/* NULL key: restart with the key given at create */
	if (EVP_MAC_init(m->hmac, NULL, 0, NULL) != 1 || EVP_MAC_update(m->hmac, &dir, 1) != 1 ||
	    EVP_MAC_update(m->hmac, hdr, IC_HDR_LEN) != 1)
		return -EIO;
	for (int i = 0; i < iovcnt; i++)
		if (iov[i].iov_len && EVP_MAC_update(m->hmac, iov[i].iov_base, iov[i].iov_len) != 1)
			return -EIO;
	if (EVP_MAC_final(m->hmac, full, &outl, sizeof(full)) != 1)
		return -EIO;
	memcpy(tag, full, IC_TAG_LEN);
	return 0;
}

/*
 * GHASH takes the AAD in 16-byte blocks; an update that ends mid-block leaves a partial block that the next update
 * completes byte by byte. The 24-byte header would leave 8 bytes pending before the payload, so the header goes
 * in together with the first 8 payload bytes (staged in a 32-byte buffer: two whole blocks) and the rest of the
 * payload starts on a block boundary. When the payload follows the header in memory (a received frame) it is one
 * update. Either way the MAC input is exactly header || payload.
 */
#define MAC_STAGE (2 * 16u)

static int gmac_update(EVP_CIPHER_CTX *ctx, const void *p, size_t len)
{
	int outl;

	return len && EVP_EncryptUpdate(ctx, NULL, &outl, p, (int)len) != 1 ? -EIO : 0;
}

int ic_mac_tag(struct ic_mac *m, const void *hdr, const struct iovec *iov, int iovcnt, uint8_t tag[IC_TAG_LEN])
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, IC_TAG_LEN),
		OSSL_PARAM_construct_end(),
	};
	uint8_t nonce[12], stage[MAC_STAGE], dummy[16];
	uint32_t dir = htole32((uint32_t)m->dir);
	size_t staged = IC_HDR_LEN, skip = 0;
	int i = 0, outl;

	if (m->hmac)
		return mac_hmac(m, hdr, iov, iovcnt, tag);
	/* nonce = direction || seq: unique per session key because seq never repeats in one direction */
	memcpy(nonce, &dir, 4);
	memcpy(nonce + 4, (const uint8_t *)hdr + offsetof(struct ic_frame_hdr, seq), 8);
	if (EVP_EncryptInit_ex2(m->gcm, NULL, NULL, nonce, NULL) != 1)
		return -EIO;
	if (iovcnt == 1 && iov[0].iov_base == (const uint8_t *)hdr + IC_HDR_LEN) {
		if (gmac_update(m->gcm, hdr, IC_HDR_LEN + iov[0].iov_len))
			return -EIO;
		i = 1;
	} else {
		memcpy(stage, hdr, IC_HDR_LEN);
		for (; i < iovcnt && staged < MAC_STAGE; i++) {
			size_t n = iov[i].iov_len < MAC_STAGE - staged ? iov[i].iov_len : MAC_STAGE - staged;

			memcpy(stage + staged, iov[i].iov_base, n);
			staged += n;
			if (n < iov[i].iov_len) {
				skip = n;   /* iov[i] continues after the staged bytes */
				break;
			}
		}
		if (gmac_update(m->gcm, stage, staged))
			return -EIO;
	}
	for (; i < iovcnt; i++, skip = 0)
		if (gmac_update(m->gcm, (const uint8_t *)iov[i].iov_base + skip, iov[i].iov_len - skip))
			return -EIO;
	if (EVP_EncryptFinal_ex(m->gcm, dummy, &outl) != 1 || EVP_CIPHER_CTX_get_params(m->gcm, params) != 1)
		return -EIO;
	return 0;
}

int ic_mac_verify(struct ic_mac *m, const void *hdr, const void *payload, size_t len, const uint8_t tag[IC_TAG_LEN])
{
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = len };
	uint8_t expect[IC_TAG_LEN];

	if (ic_mac_tag(m, hdr, &iov, 1, expect))
		return -EBADMSG;
	return CRYPTO_memcmp(expect, tag, IC_TAG_LEN) ? -EBADMSG : 0;
}

/* ---- what every transport's connections share -------------------------------------------------------- */

bool ic_conn_peer_may_dial(const struct ic_transport *t, uint32_t id)
{
	return id < t->cfg.self && ic_base_peer_index(t, id) >= 0;
}

static bool conn_peer_ok(void *opaque, uint32_t id)
{
	return ic_conn_peer_may_dial(opaque, id);
}

int ic_conn_hs_create(const struct ic_transport *t, bool dialler, uint32_t expect_peer, struct ic_hs **out)
{
	struct ic_hs_params hp = {
		.self = t->cfg.self,
		.key = t->key,
		.key_len = t->cfg.key_len,
		.dialler = dialler,
		.expect_peer = expect_peer,
		.peer_ok = conn_peer_ok,
		.opaque = (void *)t,
	};

	return ic_hs_create(&hp, out);
}

int ic_conn_macs_create(const struct ic_hs *hs, bool dialler, struct ic_mac **rx, struct ic_mac **tx)
{
	uint8_t key[IC_SESSION_KEY_LEN];
	int ret;

	*rx = *tx = NULL;
	ic_hs_session_key(hs, key);
	ret = ic_mac_create(key, dialler ? IC_DIR_L2D : IC_DIR_D2L, rx);
	if (!ret)
		ret = ic_mac_create(key, dialler ? IC_DIR_D2L : IC_DIR_L2D, tx);
	OPENSSL_cleanse(key, sizeof(key));
	if (ret) {
		ic_mac_destroy(*rx);
		ic_mac_destroy(*tx);
		*rx = *tx = NULL;
	}
	return ret;
}

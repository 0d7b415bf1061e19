// SPDX-License-Identifier: MIT
/*
 * mkinitramfs: write a Linux initramfs (cpio "newc", uncompressed) to stdout from a list of entries, with every
 * owner 0:0 and every mtime 0, so the same inputs give the same bytes. Device nodes need no privileges (they are
 * only described). Entries, one per argument:
 *   dir:PATH:MODE            a directory
 *   file:PATH:MODE:SOURCE    a regular file with SOURCE's contents
 *   nod:PATH:MODE:c|b:MAJ:MIN  a device node
 * MODE is octal permission bits. Errors: a line on stderr, exit 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static unsigned long ino = 1;

static void pad4(unsigned long n)
{
	while (n++ % 4)
		putchar(0);
}

static void header(const char *name, unsigned long mode, unsigned long size, unsigned long rmaj, unsigned long rmin)
{
	unsigned long nlen = strlen(name) + 1;

	printf("070701%08lX%08lX%08lX%08lX%08lX%08lX%08lX%08lX%08lX%08lX%08lX%08lX%08lX", ino++, mode, 0ul, 0ul,
	       (mode & S_IFMT) == S_IFDIR ? 2ul : 1ul, 0ul, size, 0ul, 0ul, rmaj, rmin, nlen, 0ul);
	fwrite(name, 1, nlen, stdout);
	pad4(110 + nlen);
}

static int die(const char *what, const char *arg)
{
	fprintf(stderr, "mkinitramfs: %s: %s\n", what, arg);
	return 1;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		char *spec = strdup(argv[i]), *f[7] = { 0 };
		int n = 0;

		for (char *p = spec, *tok; n < 7 && (tok = strsep(&p, ":")); )
			f[n++] = tok;
		if (n < 3)
			return die("bad entry", argv[i]);
		unsigned long perm = strtoul(f[2], NULL, 8) & 07777;

		if (!strcmp(f[0], "dir") && n == 3) {
			header(f[1], S_IFDIR | perm, 0, 0, 0);
		} else if (!strcmp(f[0], "nod") && n == 6) {
			header(f[1], (f[3][0] == 'b' ? S_IFBLK : S_IFCHR) | perm, 0, strtoul(f[4], NULL, 0),
			       strtoul(f[5], NULL, 0));
		} else if (!strcmp(f[0], "file") && n == 4) {
			FILE *in = fopen(f[3], "rb");
			char buf[65536];
			long size;
			size_t r;

			if (!in)
				return die(f[3], strerror(errno));
			if (fseek(in, 0, SEEK_END) || (size = ftell(in)) < 0 || fseek(in, 0, SEEK_SET))
				return die(f[3], "cannot size");
			header(f[1], S_IFREG | perm, (unsigned long)size, 0, 0);
			while ((r = fread(buf, 1, sizeof(buf), in)) > 0)
				fwrite(buf, 1, r, stdout);
			fclose(in);
			pad4((unsigned long)size);
		} else {
			return die("bad entry", argv[i]);
		}
		free(spec);
	}
	header("TRAILER!!!", 0, 0, 0, 0);
	return fflush(stdout) ? die("write", strerror(errno)) : 0;
}

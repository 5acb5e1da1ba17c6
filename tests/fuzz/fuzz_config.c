/* Settings and command-line parsing: the input is split into arguments at newlines. */
#include <stdlib.h>
#include <string.h>

#include "app/config.h"

/* Run with -close_fd_mask=2: the parser's error messages go to stderr. */
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *argv[64];
    int argc = 0;
    for (char *p = copy; argc < 64;) {
        argv[argc++] = p;
        char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    config_t cfg;
    char *rest[4];
    int nrest;
    config_parse(&cfg, argc, argv, rest, 4, &nrest);
    free(copy);
    return 0;
}

#!/bin/sh
# The tree a client's job pulls, made once by converge.yml (ansible.builtin.script, creates the
# big file, which comes last): what rsync -aHAX --numeric-ids must keep, and what it must not
# follow. $1: MiB of the big file (verify changes 1 % of its blocks).
set -eu
big_mib=$1
cd /data/src
mkdir -p docs/sub empty links/deeper /data/outside
printf 'readme of %s\n' "$(hostname)" >docs/readme.txt
printf 'notes\n' >docs/sub/notes.txt
# Owners and modes: another user's read-only folder, a private file, set-id bits.
install -d -o 1234 -g 1234 -m 0555 alice
printf 'x\n' >alice-file && chown 1234:1234 alice-file
printf 'only root and 2345\n' >secret.txt && chown 2345:100 secret.txt && chmod 0600 secret.txt
printf 'x\n' >setuid.bin && chown 1234:1234 setuid.bin && chmod 4755 setuid.bin
install -d -o 1234 -g 100 -m 2775 shared
# ACLs (access and default) and user xattrs (binary values too).
setfacl -m u:1234:rw-,g:100:r-- docs/readme.txt
setfacl -m u:2345:r-x shared
setfacl -d -m u:1234:rwx,g:100:r-x shared
setfattr -n user.comment -v 'pulled, not pushed' docs/readme.txt
setfattr -n user.bin -v 0x00ff10 docs/sub/notes.txt
setfattr -n user.dir -v 1 docs
# Hard links inside the tree, across folders.
printf 'linked\n' >links/a && ln links/a links/b && ln links/a links/deeper/c
# Symlinks: inside, dangling, and out of the tree (absolute and relative) to a sentinel the
# server must never receive (verify asks for it with -L and --copy-unsafe-links too).
printf 'OUTSIDE-SENTINEL %s\n' "$(hostname)" >/data/outside/secret
ln -s docs/readme.txt rel-link
ln -s nowhere dangling
ln -s /data/outside/secret escape-abs
ln -s ../outside/secret escape-rel
ln -s ../outside escape-dir
# Names: a space, a newline, a byte that is no UTF-8, a leading dash, non-ASCII.
printf 'a\n' >'with space'
printf 'b\n' >"$(printf 'new\nline')"
printf 'c\n' >"$(printf 'bad\377byte')"
printf 'd\n' >-leading-dash
printf 'e\n' >'ünïcødé'
mkfifo fifo
dd if=/dev/urandom of=.big.tmp bs=1M count="$big_mib" status=none
mv .big.tmp big.bin

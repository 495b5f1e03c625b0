# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_crustctl_global_optspecs
    string join \n config= socket= root= state= o/output= h/help V/version
end

function __fish_crustctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_crustctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_crustctl_using_subcommand
    set -l cmd (__fish_crustctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c crustctl -n "__fish_crustctl_needs_command" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_needs_command" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_needs_command" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_needs_command" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_needs_command" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c crustctl -n "__fish_crustctl_needs_command" -s V -l version -d 'Print version'
complete -c crustctl -n "__fish_crustctl_needs_command" -f -a "images" -d 'Images: list, pull, remove, tag, inspect, import and export archives'
complete -c crustctl -n "__fish_crustctl_needs_command" -f -a "pods" -d 'Pod sandboxes'
complete -c crustctl -n "__fish_crustctl_needs_command" -f -a "containers" -d 'Containers'
complete -c crustctl -n "__fish_crustctl_needs_command" -f -a "status" -d 'Runtime and network conditions, versions, the configuration in effect'
complete -c crustctl -n "__fish_crustctl_needs_command" -f -a "check" -d 'Verifies the image store: blob digests, unpacked layers, records'
complete -c crustctl -n "__fish_crustctl_needs_command" -f -a "wipe" -d 'Removes crust\'s state after a drain (refused while containers run)'
complete -c crustctl -n "__fish_crustctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -f -a "ls" -d 'Lists images'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -f -a "pull" -d 'Pulls an image (as kubelet would, through CRI)'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -f -a "rm" -d 'Removes images (a tag of an image that has others, else the image)'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -f -a "tag" -d 'Adds the tag TARGET to the image SOURCE names'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -f -a "inspect" -d 'Shows an image\'s record, config and layers'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -f -a "import" -d 'Imports an OCI image-layout or docker-archive tarball (plain or gzip)'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -f -a "import-checkpoint" -d 'Imports a checkpoint archive (CheckpointContainer\'s) as an image NAME, as CRI-O restores from: a container created with NAME as its image is restored from the checkpoint'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -f -a "export" -d 'Exports images to a tarball. Layers are re-made from the unpacked store, so the exported image gets a new image ID unless the re-made tars reproduce the original diff IDs'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and not __fish_seen_subcommand_from ls pull rm tag inspect import import-checkpoint export help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from ls" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from ls" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from ls" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from ls" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from pull" -l creds -d 'Credentials, `user:password`' -r
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from pull" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from pull" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from pull" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from pull" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from pull" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from pull" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from rm" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from rm" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from rm" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from rm" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from rm" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from tag" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from tag" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from tag" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from tag" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from tag" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from tag" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from inspect" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from inspect" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from inspect" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from inspect" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from inspect" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import" -s t -l tag -d 'Tags to give each imported image (required for an archive whose images have no names)' -r
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import-checkpoint" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import-checkpoint" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import-checkpoint" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import-checkpoint" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import-checkpoint" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from import-checkpoint" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from export" -s f -l file -d 'The tarball to write' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from export" -l format -r -f -a "oci\t'OCI image layout'
docker\t'`docker save` format'"
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from export" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from export" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from export" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from export" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from export" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from help" -f -a "ls" -d 'Lists images'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from help" -f -a "pull" -d 'Pulls an image (as kubelet would, through CRI)'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from help" -f -a "rm" -d 'Removes images (a tag of an image that has others, else the image)'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from help" -f -a "tag" -d 'Adds the tag TARGET to the image SOURCE names'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from help" -f -a "inspect" -d 'Shows an image\'s record, config and layers'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from help" -f -a "import" -d 'Imports an OCI image-layout or docker-archive tarball (plain or gzip)'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from help" -f -a "import-checkpoint" -d 'Imports a checkpoint archive (CheckpointContainer\'s) as an image NAME, as CRI-O restores from: a container created with NAME as its image is restored from the checkpoint'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from help" -f -a "export" -d 'Exports images to a tarball. Layers are re-made from the unpacked store, so the exported image gets a new image ID unless the re-made tars reproduce the original diff IDs'
complete -c crustctl -n "__fish_crustctl_using_subcommand images; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and not __fish_seen_subcommand_from ls inspect help" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and not __fish_seen_subcommand_from ls inspect help" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and not __fish_seen_subcommand_from ls inspect help" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and not __fish_seen_subcommand_from ls inspect help" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and not __fish_seen_subcommand_from ls inspect help" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and not __fish_seen_subcommand_from ls inspect help" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and not __fish_seen_subcommand_from ls inspect help" -f -a "ls" -d 'Lists pod sandboxes'
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and not __fish_seen_subcommand_from ls inspect help" -f -a "inspect" -d 'Shows a pod sandbox\'s status'
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and not __fish_seen_subcommand_from ls inspect help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from ls" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from ls" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from ls" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from ls" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from inspect" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from inspect" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from inspect" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from inspect" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from inspect" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from help" -f -a "ls" -d 'Lists pod sandboxes'
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from help" -f -a "inspect" -d 'Shows a pod sandbox\'s status'
complete -c crustctl -n "__fish_crustctl_using_subcommand pods; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and not __fish_seen_subcommand_from ls inspect logs help" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and not __fish_seen_subcommand_from ls inspect logs help" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and not __fish_seen_subcommand_from ls inspect logs help" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and not __fish_seen_subcommand_from ls inspect logs help" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and not __fish_seen_subcommand_from ls inspect logs help" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and not __fish_seen_subcommand_from ls inspect logs help" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and not __fish_seen_subcommand_from ls inspect logs help" -f -a "ls" -d 'Lists containers (running ones unless --all)'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and not __fish_seen_subcommand_from ls inspect logs help" -f -a "inspect" -d 'Shows a container\'s status'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and not __fish_seen_subcommand_from ls inspect logs help" -f -a "logs" -d 'Prints a container\'s log (the CRI log file, messages only)'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and not __fish_seen_subcommand_from ls inspect logs help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from ls" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from ls" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from ls" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from ls" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from ls" -s a -l all
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from inspect" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from inspect" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from inspect" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from inspect" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from inspect" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from logs" -l tail -d 'Only the last N lines' -r
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from logs" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from logs" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from logs" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from logs" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from logs" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from logs" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from help" -f -a "ls" -d 'Lists containers (running ones unless --all)'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from help" -f -a "inspect" -d 'Shows a container\'s status'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from help" -f -a "logs" -d 'Prints a container\'s log (the CRI log file, messages only)'
complete -c crustctl -n "__fish_crustctl_using_subcommand containers; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c crustctl -n "__fish_crustctl_using_subcommand status" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand status" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand status" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand status" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand status" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand check" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand check" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand check" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand check" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand check" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand check" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand wipe" -l config -d 'crustd\'s main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand wipe" -l socket -d 'CRI socket path (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand wipe" -l root -d 'Persistent root directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand wipe" -l state -d 'Runtime state directory (overrides the configuration)' -r -F
complete -c crustctl -n "__fish_crustctl_using_subcommand wipe" -s o -l output -d 'Output: a table for people or JSON for scripts' -r -f -a "table\t''
json\t''"
complete -c crustctl -n "__fish_crustctl_using_subcommand wipe" -l yes -d 'Really do it (without it, wipe says what it would remove)'
complete -c crustctl -n "__fish_crustctl_using_subcommand wipe" -s h -l help -d 'Print help'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and not __fish_seen_subcommand_from images pods containers status check wipe help" -f -a "images" -d 'Images: list, pull, remove, tag, inspect, import and export archives'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and not __fish_seen_subcommand_from images pods containers status check wipe help" -f -a "pods" -d 'Pod sandboxes'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and not __fish_seen_subcommand_from images pods containers status check wipe help" -f -a "containers" -d 'Containers'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and not __fish_seen_subcommand_from images pods containers status check wipe help" -f -a "status" -d 'Runtime and network conditions, versions, the configuration in effect'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and not __fish_seen_subcommand_from images pods containers status check wipe help" -f -a "check" -d 'Verifies the image store: blob digests, unpacked layers, records'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and not __fish_seen_subcommand_from images pods containers status check wipe help" -f -a "wipe" -d 'Removes crust\'s state after a drain (refused while containers run)'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and not __fish_seen_subcommand_from images pods containers status check wipe help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from images" -f -a "ls" -d 'Lists images'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from images" -f -a "pull" -d 'Pulls an image (as kubelet would, through CRI)'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from images" -f -a "rm" -d 'Removes images (a tag of an image that has others, else the image)'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from images" -f -a "tag" -d 'Adds the tag TARGET to the image SOURCE names'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from images" -f -a "inspect" -d 'Shows an image\'s record, config and layers'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from images" -f -a "import" -d 'Imports an OCI image-layout or docker-archive tarball (plain or gzip)'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from images" -f -a "import-checkpoint" -d 'Imports a checkpoint archive (CheckpointContainer\'s) as an image NAME, as CRI-O restores from: a container created with NAME as its image is restored from the checkpoint'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from images" -f -a "export" -d 'Exports images to a tarball. Layers are re-made from the unpacked store, so the exported image gets a new image ID unless the re-made tars reproduce the original diff IDs'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from pods" -f -a "ls" -d 'Lists pod sandboxes'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from pods" -f -a "inspect" -d 'Shows a pod sandbox\'s status'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from containers" -f -a "ls" -d 'Lists containers (running ones unless --all)'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from containers" -f -a "inspect" -d 'Shows a container\'s status'
complete -c crustctl -n "__fish_crustctl_using_subcommand help; and __fish_seen_subcommand_from containers" -f -a "logs" -d 'Prints a container\'s log (the CRI log file, messages only)'

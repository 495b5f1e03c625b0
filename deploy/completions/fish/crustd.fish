# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_crustd_global_optspecs
    string join \n config= socket= root= state= log-level= h/help V/version
end

function __fish_crustd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_crustd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_crustd_using_subcommand
    set -l cmd (__fish_crustd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c crustd -n "__fish_crustd_needs_command" -l config -d 'Main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustd -n "__fish_crustd_needs_command" -l socket -d 'CRI socket path' -r -F
complete -c crustd -n "__fish_crustd_needs_command" -l root -d 'Persistent root directory' -r -F
complete -c crustd -n "__fish_crustd_needs_command" -l state -d 'Runtime state directory' -r -F
complete -c crustd -n "__fish_crustd_needs_command" -l log-level -d 'Log level (error, warn, info, debug, trace) or a tracing filter' -r
complete -c crustd -n "__fish_crustd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c crustd -n "__fish_crustd_needs_command" -s V -l version -d 'Print version'
complete -c crustd -n "__fish_crustd_needs_command" -f -a "config" -d 'Print the effective configuration as TOML, every default filled in'
complete -c crustd -n "__fish_crustd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c crustd -n "__fish_crustd_using_subcommand config" -l config -d 'Main configuration file (drop-ins are read from crust.d/ beside it)' -r -F
complete -c crustd -n "__fish_crustd_using_subcommand config" -l socket -d 'CRI socket path' -r -F
complete -c crustd -n "__fish_crustd_using_subcommand config" -l root -d 'Persistent root directory' -r -F
complete -c crustd -n "__fish_crustd_using_subcommand config" -l state -d 'Runtime state directory' -r -F
complete -c crustd -n "__fish_crustd_using_subcommand config" -l log-level -d 'Log level (error, warn, info, debug, trace) or a tracing filter' -r
complete -c crustd -n "__fish_crustd_using_subcommand config" -s h -l help -d 'Print help'
complete -c crustd -n "__fish_crustd_using_subcommand help; and not __fish_seen_subcommand_from config help" -f -a "config" -d 'Print the effective configuration as TOML, every default filled in'
complete -c crustd -n "__fish_crustd_using_subcommand help; and not __fish_seen_subcommand_from config help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'

/*
 * graph-dump.c - the block graph as x-debug-query-block-graph shows it:
 * every node, every user of a node (exports' backends, jobs), and every
 * edge with the permissions it holds and shares.
 */
#include <stdlib.h>
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/block-int.h"
#include "blockd/graph-lock.h"
#include "blockd/main-loop.h"

typedef struct GraphIds {
    const void **objs;
    size_t n, cap;
} GraphIds;

/* A stable number for each object within one dump (1, 2, ...). */
static int graph_id(GraphIds *ids, const void *obj, bool *is_new)
{
    for (size_t i = 0; i < ids->n; i++) {
        if (ids->objs[i] == obj) {
            *is_new = false;
            return (int)i + 1;
        }
    }
    if (ids->n == ids->cap) {
        ids->cap = ids->cap ? ids->cap * 2 : 16;
        ids->objs = realloc(ids->objs, ids->cap * sizeof(*ids->objs));
        if (!ids->objs) {
            abort();
        }
    }
    ids->objs[ids->n++] = obj;
    *is_new = true;
    return (int)ids->n;
}

static json_object *perm_list(uint64_t perm)
{
    /* Highest bit first, as QEMU lists them. */
    static const struct { uint64_t bit; const char *name; } names[] = {
        { BLK_PERM_RESIZE, "resize" },
        { BLK_PERM_WRITE_UNCHANGED, "write-unchanged" },
        { BLK_PERM_WRITE, "write" },
        { BLK_PERM_CONSISTENT_READ, "consistent-read" },
    };
    json_object *list = json_object_new_array();

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (perm & names[i].bit) {
            json_object_array_add(list, json_object_new_string(names[i].name));
        }
    }
    return list;
}

static void add_node(json_object *nodes, int id, const char *type, const char *name)
{
    json_object *n = json_object_new_object();

    json_object_object_add(n, "id", json_object_new_int(id));
    json_object_object_add(n, "type", json_object_new_string(type));
    json_object_object_add(n, "name", json_object_new_string(name ? name : ""));
    json_object_array_add(nodes, n);
}

static void add_edge(json_object *edges, int parent, int child, BdrvChild *c)
    GRAPH_RDLOCK
{
    json_object *e = json_object_new_object();

    json_object_object_add(e, "parent", json_object_new_int(parent));
    json_object_object_add(e, "child", json_object_new_int(child));
    json_object_object_add(e, "name", json_object_new_string(c->name));
    json_object_object_add(e, "perm", perm_list(c->perm));
    json_object_object_add(e, "shared-perm", perm_list(c->shared_perm));
    json_object_array_add(edges, e);
}

json_object *bdrv_query_graph(void)
{
    json_object *graph = json_object_new_object();
    json_object *nodes = json_object_new_array(), *edges = json_object_new_array();
    GraphIds ids = { 0 };
    bool is_new;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        int id = graph_id(&ids, bs, &is_new);
        if (is_new) {
            add_node(nodes, id, "block-driver", bs->node_name);
        }
        /* Edges from every parent: nodes, backends and jobs alike. */
        list_for_each(n, &bs->parents) {
            BdrvChild *c = list_entry(n, BdrvChild, next_parent);
            int parent = graph_id(&ids, c->opaque, &is_new);
            if (is_new) {
                add_node(nodes, parent, c->klass->parent_type ? c->klass->parent_type : "",
                         c->klass->get_parent_name ? c->klass->get_parent_name(c) : "");
            }
            add_edge(edges, parent, id, c);
        }
    }
    graph_rdunlock_main_loop();
    free(ids.objs);
    json_object_object_add(graph, "nodes", nodes);
    json_object_object_add(graph, "edges", edges);
    return graph;
}
